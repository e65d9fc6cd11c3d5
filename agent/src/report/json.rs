//! The JSON report, written as `serde_json`'s pretty printer writes it — the same bytes — with
//! each line break and its indentation in one write (the pretty printer writes two spaces per
//! level, one call each: for a report of 16k+ blockers, millions of calls).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// `",\n"` and enough spaces for [`MAX_FAST_DEPTH`] levels of two.
const BREAK: &[u8] = b",\n                                                                                                                                ";
/// Deeper than this, indentation is written two spaces at a time (the test goes deeper).
#[cfg(test)]
const MAX_FAST_DEPTH: usize = (BREAK.len() - 2) / 2;

/// `serde_json::ser::PrettyFormatter` with two-space indentation, line breaks written whole.
#[derive(Debug, Default)]
struct Pretty {
    depth: usize,
    has_value: bool,
}

impl Pretty {
    /// A line break (after a comma unless `first`) and the indentation of the current depth.
    fn line<W: ?Sized + Write>(&self, w: &mut W, first: bool) -> io::Result<()> {
        let from = usize::from(first);
        match BREAK.get(from..2 + 2 * self.depth) {
            Some(bytes) => w.write_all(bytes),
            None => {
                w.write_all(BREAK.get(from..2).unwrap_or(b"\n"))?;
                (0..self.depth).try_for_each(|_| w.write_all(b"  "))
            }
        }
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        if self.has_value {
            self.line(w, true)?;
        }
        w.write_all(bracket)
    }
}

impl Formatter for Pretty {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.line(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.line(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Write `value` as pretty JSON (two-space indentation), without a final newline.
pub fn write_pretty<W: Write, T: ?Sized + Serialize>(out: W, value: &T) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, Pretty::default());
    value.serialize(&mut ser).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(value: &serde_json::Value) -> (String, String) {
        let mut ours = Vec::new();
        write_pretty(&mut ours, value).expect("write");
        let theirs = serde_json::to_string_pretty(value).expect("write");
        (String::from_utf8(ours).expect("utf-8"), theirs)
    }

    /// The same bytes as serde_json's pretty printer: empty and nested containers, scalars,
    /// escapes, and nesting deeper than the one-write indentation reaches.
    #[test]
    fn writes_what_serde_json_pretty_writes() {
        let mut deep = json!({"leaf": [1, {"a": []}]});
        for i in 0..(MAX_FAST_DEPTH + 5) {
            deep = if i % 2 == 0 {
                json!([deep, {}, []])
            } else {
                json!({ "k": deep, "s": "x\"\n\u{1}é" })
            };
        }
        for value in [
            json!(null),
            json!([]),
            json!({}),
            json!({"a": 1, "b": [true, false, null], "c": {"d": -1.5, "e": "\t"}, "f": [[], {}]}),
            deep,
        ] {
            let (ours, theirs) = both(&value);
            assert_eq!(ours, theirs);
        }
    }
}
