//! Whole capture files (pcap or pcapng bytes) through the reader and the full pipeline.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshwatch::capture::file::CaptureFile;
use meshwatch::flow::TableLimits;
use meshwatch::pipeline::Pipeline;

fuzz_target!(|data: &[u8]| {
    let reader = std::io::Cursor::new(data.to_vec());
    let Ok(mut capture) = CaptureFile::from_reader("fuzz".into(), reader) else {
        return;
    };
    let mut pipeline = Pipeline::new(TableLimits {
        max_flows: 64,
        ..TableLimits::default()
    });
    let _ = capture.for_each_frame(
        |f| pipeline.on_frame(&f),
        |_| {},
    );
    pipeline.finish();
    pipeline.take_finished().for_each(drop);
});
