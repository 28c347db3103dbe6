use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A process identity unique across a fleet and across pid reuse.
///
/// Text form `ASID:PID:START_TICKS` in JSON; a compact tuple in the binary codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Upid {
    /// Agent id (one per node).
    pub asid: u32,
    /// Process id on that node.
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl Upid {
    /// The text form, `ASID:PID:START_TICKS`, written into `text` on the stack: the one place
    /// that defines it, for `Display` and for JSON. Without `fmt` (JSON used `collect_str`,
    /// whose `fmt` was ~8% of the Kafka sink's thread: a upid in every row's line and key).
    fn text<'t>(&self, text: &'t mut [u8; UPID_TEXT_MAX]) -> &'t str {
        let mut len = 0;
        let mut digits = itoa::Buffer::new();
        for (i, number) in [u64::from(self.asid), u64::from(self.pid), self.start_ticks].into_iter().enumerate() {
            if i > 0 {
                text[len] = b':';
                len += 1;
            }
            let number = digits.format(number).as_bytes();
            text[len..len + number.len()].copy_from_slice(number);
            len += number.len();
        }
        std::str::from_utf8(&text[..len]).expect("digits and colons are ASCII")
    }

    /// Appends the text form, `ASID:PID:START_TICKS`, to `out` (writers of JSON by hand: it
    /// needs no escaping).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text(&mut [0; UPID_TEXT_MAX]).as_bytes());
    }
}

/// Longest text form: two u32s, a u64 and two colons.
const UPID_TEXT_MAX: usize = 10 + 1 + 10 + 1 + 20;

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; UPID_TEXT_MAX]))
    }
}

/// Why a text upid did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upid {text:?}: expected ASID:PID:START_TICKS with unsigned integers")]
pub struct ParseUpidError {
    text: String,
}

impl FromStr for Upid {
    type Err = ParseUpidError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseUpidError { text: text.chars().take(64).collect() };
        let mut parts = text.split(':');
        let (Some(asid), Some(pid), Some(start), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        Ok(Upid {
            asid: asid.parse().map_err(|_| err())?,
            pid: pid.parse().map_err(|_| err())?,
            start_ticks: start.parse().map_err(|_| err())?,
        })
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.text(&mut [0; UPID_TEXT_MAX]))
        } else {
            (self.asid, self.pid, self.start_ticks).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UpidVisitor;
        impl<'de> Visitor<'de> for UpidVisitor {
            type Value = Upid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a upid \"ASID:PID:START_TICKS\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Upid, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Upid, A::Error> {
                let asid = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let pid = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let start_ticks = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(2, &self))?;
                Ok(Upid { asid, pid, start_ticks })
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(UpidVisitor)
        } else {
            deserializer.deserialize_tuple(3, UpidVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let upid: Upid = "7:1234:99887766".parse().unwrap();
        assert_eq!(upid, Upid { asid: 7, pid: 1234, start_ticks: 99887766 });
        assert_eq!(upid.to_string(), "7:1234:99887766");
    }

    #[test]
    fn json_text_is_the_display_text_up_to_the_largest_upid() {
        for upid in [
            Upid::default(),
            Upid { asid: 7, pid: 1234, start_ticks: 99887766 },
            Upid { asid: u32::MAX, pid: u32::MAX, start_ticks: u64::MAX },
        ] {
            let json = serde_json::to_string(&upid).unwrap();
            assert_eq!(json, format!("\"{upid}\""));
            assert_eq!(serde_json::from_str::<Upid>(&json).unwrap(), upid);
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "1:2", "1:2:3:4", "a:2:3", "-1:2:3", "1:2:99999999999999999999"] {
            assert!(bad.parse::<Upid>().is_err(), "{bad:?} parsed");
        }
    }
}
