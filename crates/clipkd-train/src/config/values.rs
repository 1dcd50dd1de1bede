//! Config values written as strings but checked when the config is read: the device
//! (`run.device`) and the CSV separator (`data.csv_separator`).

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A device by name: `cpu`, `cuda`, `cuda:N`, `wgpu`, `wgpu:N` (`run.device`, `--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (Flex backend, SIMD + rayon).
    #[default]
    Cpu,
    /// An NVIDIA GPU by index (`cuda` is `cuda:0`).
    Cuda(usize),
    /// A GPU through wgpu (Vulkan, Metal, DX12): the default adapter, or the N-th discrete GPU.
    Wgpu(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => {
                let index = index
                    .parse::<usize>()
                    .map_err(|_| format!("device `{s}`: `{index}` is not a device index"))?;
                (kind, Some(index))
            }
            None => (s, None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", index) => Ok(DeviceSpec::Cuda(index.unwrap_or(0))),
            ("wgpu", index) => Ok(DeviceSpec::Wgpu(index)),
            _ => Err(format!(
                "unknown device `{s}`: expected `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`"
            )),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
        }
    }
}

/// The field separator of CSV files: one ASCII character (`data.csv_separator`, default tab).
/// Read from a string of that character, or from `\t` or `tab` for the tab (what a TOML
/// literal string `'\t'` or a shell argument gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvSeparator(u8);

impl CsvSeparator {
    /// The tab, CLIP-KD's separator.
    pub const TAB: CsvSeparator = CsvSeparator(b'\t');

    /// The separator as a byte (what the CSV reader takes).
    pub fn byte(self) -> u8 {
        self.0
    }
}

impl Default for CsvSeparator {
    fn default() -> Self {
        CsvSeparator::TAB
    }
}

impl FromStr for CsvSeparator {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            b"\\t" | b"tab" => Ok(CsvSeparator::TAB),
            [b] if b.is_ascii() => Ok(CsvSeparator(*b)),
            _ => Err(format!(
                "`{}` must be exactly one ASCII character",
                s.escape_default()
            )),
        }
    }
}

impl fmt::Display for CsvSeparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 as char)
    }
}

/// Serde through the string forms above, so a bad value is an error naming its field when the
/// config is read.
macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(D::Error::custom)
            }
        }
    )*};
}

serde_as_string!(DeviceSpec, CsvSeparator);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, device, printed) in [
            ("cpu", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:3", DeviceSpec::Cuda(3), "cuda:3"),
            ("wgpu", DeviceSpec::Wgpu(None), "wgpu"),
            ("wgpu:1", DeviceSpec::Wgpu(Some(1)), "wgpu:1"),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), device);
            assert_eq!(device.to_string(), printed);
        }
        for bad in ["gpu", "cpu:1", "cuda:x", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn separators_are_one_ascii_character() {
        assert_eq!(",".parse::<CsvSeparator>().unwrap().byte(), b',');
        assert_eq!(CsvSeparator::default().to_string(), "\t");
        assert_eq!("\\t".parse::<CsvSeparator>().unwrap(), CsvSeparator::TAB);
        assert_eq!("tab".parse::<CsvSeparator>().unwrap(), CsvSeparator::TAB);
        for bad in ["", ",,", "é"] {
            let e = bad.parse::<CsvSeparator>().unwrap_err();
            assert!(e.contains("one ASCII character"), "{e}");
        }
        let json = serde_json::to_string(&CsvSeparator::TAB).unwrap();
        assert_eq!(json, r#""\t""#);
        assert_eq!(
            serde_json::from_str::<CsvSeparator>(&json).unwrap(),
            CsvSeparator::TAB
        );
    }
}
