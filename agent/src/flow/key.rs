//! The canonical flow key: both directions of a connection map to the same key.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// An address and port.
pub type Endpoint = (IpAddr, u16);

/// The 5-tuple (protocol is always TCP) with the endpoints in a canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
}

/// Which endpoint of the key sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromLo,
    FromHi,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and which side sent it.
    pub fn new(src: Endpoint, dst: Endpoint) -> (Self, Direction) {
        // IPv4 at both ends (nearly every packet): compare each end as one word, which orders
        // them as the derived `Ord` does (an address's octets, big-endian, then the port)
        let src_first = match (src.0, dst.0) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let word = |ip: std::net::Ipv4Addr, port: u16| {
                    u64::from(ip.to_bits()) << 16 | u64::from(port)
                };
                word(a, src.1) <= word(b, dst.1)
            }
            _ => src <= dst,
        };
        if src_first {
            (FlowKey { lo: src, hi: dst }, Direction::FromLo)
        } else {
            (FlowKey { lo: dst, hi: src }, Direction::FromHi)
        }
    }

    /// Feed the key to a hasher in two words when both ends are IPv4 (the derived `Hash` feeds
    /// it field by field — enum tags, lengths, bytes — which is most of a table lookup's cost);
    /// other keys as the derived `Hash` does. Equal keys hash equally.
    pub fn hash_compact<H: Hasher>(&self, state: &mut H) {
        match (self.lo.0, self.hi.0) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                state.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
                state.write_u32(u32::from(self.lo.1) << 16 | u32::from(self.hi.1));
            }
            _ => self.hash(state),
        }
    }

    /// The endpoint that sends packets in `direction`.
    pub fn sender(&self, direction: Direction) -> Endpoint {
        match direction {
            Direction::FromLo => self.lo,
            Direction::FromHi => self.hi,
        }
    }
}

impl Direction {
    pub fn reverse(self) -> Self {
        match self {
            Direction::FromLo => Direction::FromHi,
            Direction::FromHi => Direction::FromLo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn both_directions_share_a_key(a: [u8; 4], b: [u8; 16], pa: u16, pb: u16) {
            let x = (IpAddr::from(a), pa);
            let y = (IpAddr::from(b), pb);
            let (k1, d1) = FlowKey::new(x, y);
            let (k2, d2) = FlowKey::new(y, x);
            prop_assert_eq!(k1, k2);
            prop_assert_eq!(k1.sender(d1), x);
            prop_assert_eq!(k2.sender(d2), y);
            prop_assert_eq!(d1.reverse() == d2, x != y);
        }

        /// The one-word comparison of two IPv4 ends orders them as the derived `Ord` does.
        #[test]
        fn ipv4_ends_are_ordered_as_the_derived_ord_says(a: [u8; 4], b: [u8; 4], pa: u16, pb: u16) {
            let x = (IpAddr::from(a), pa);
            let y = (IpAddr::from(b), pb);
            let (k, d) = FlowKey::new(x, y);
            prop_assert_eq!(d == Direction::FromLo, x <= y);
            prop_assert_eq!(k.sender(Direction::FromLo), x.min(y));
        }
    }
}
