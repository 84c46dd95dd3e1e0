//! The brokers a sweep measures: `--target NAME=ADDR[,PROTOCOL][,pid=PID]`,
//! repeated. `ADDR` is `HOST:PORT` (Kafka: bootstrap servers separated by
//! `;`) or `embedded`: the broker loadgen starts in its own process, one
//! for all embedded targets, with its Kafka listener on when a target needs
//! it. Without `--target`, `--broker`/`--protocol` name one target.

use crate::transport::Protocol;
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("--target '{0}': expected NAME=ADDR[,native|kafka][,pid=PID]")]
    Syntax(String),
    #[error("--target '{0}': the name may only hold letters, digits, '.', '_' and '-' (it becomes part of topic and file names)")]
    Name(String),
    #[error("--target '{spec}': unknown option '{option}' (native, kafka or pid=PID)")]
    Option { spec: String, option: String },
    #[error("--target names must be unique; '{0}' is given twice")]
    Duplicate(String),
    #[error("--target '{0}': pid= needs a broker on this host, not the embedded one (its CPU is measured already)")]
    PidForEmbedded(String),
}

/// Where a target's broker is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Address {
    Embedded,
    /// Broker 1 of the local cluster `--cluster N` starts (not a
    /// `--target` address: the flag replaces the embedded broker).
    Cluster,
    Remote(String),
}

/// One `--target`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSpec {
    pub name: String,
    pub address: Address,
    pub protocol: Protocol,
    /// A broker process on this host whose CPU to measure.
    pub pid: Option<u32>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl TargetSpec {
    pub fn parse(spec: &str) -> Result<TargetSpec, TargetError> {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| TargetError::Syntax(spec.into()))?;
        if !valid_name(name) {
            return Err(TargetError::Name(spec.into()));
        }
        let mut parts = rest.split(',');
        let addr = parts.next().filter(|a| !a.is_empty());
        let addr = addr.ok_or_else(|| TargetError::Syntax(spec.into()))?;
        let address = if addr == "embedded" {
            Address::Embedded
        } else {
            // librdkafka separates bootstrap servers with ','; here ',' ends
            // the address, so several servers are written with ';'.
            Address::Remote(addr.replace(';', ","))
        };
        let mut t = TargetSpec {
            name: name.into(),
            address,
            protocol: Protocol::Native,
            pid: None,
        };
        for o in parts {
            match o {
                "native" => t.protocol = Protocol::Native,
                "kafka" => t.protocol = Protocol::Kafka,
                _ => match o.strip_prefix("pid=").and_then(|p| p.parse().ok()) {
                    Some(pid) => t.pid = Some(pid),
                    None => {
                        return Err(TargetError::Option {
                            spec: spec.into(),
                            option: o.into(),
                        })
                    }
                },
            }
        }
        if t.pid.is_some() && t.address == Address::Embedded {
            return Err(TargetError::PidForEmbedded(spec.into()));
        }
        Ok(t)
    }

    /// Parse every `--target`, refusing duplicate names.
    pub fn parse_all(specs: &[String]) -> Result<Vec<TargetSpec>, TargetError> {
        let mut out: Vec<TargetSpec> = Vec::new();
        for s in specs {
            let t = TargetSpec::parse(s)?;
            if out.iter().any(|o| o.name == t.name) {
                return Err(TargetError::Duplicate(t.name));
            }
            out.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = TargetSpec::parse("kafka=127.0.0.1:9092,kafka,pid=42").unwrap();
        assert_eq!(t.name, "kafka");
        assert_eq!(t.address, Address::Remote("127.0.0.1:9092".into()));
        assert_eq!(t.protocol, Protocol::Kafka);
        assert_eq!(t.pid, Some(42));
        let t = TargetSpec::parse("sl=embedded").unwrap();
        assert_eq!(t.address, Address::Embedded);
        assert_eq!(t.protocol, Protocol::Native);
        let t = TargetSpec::parse("rp=a:1;b:2,kafka").unwrap();
        assert_eq!(t.address, Address::Remote("a:1,b:2".into()));
    }

    #[test]
    fn refuses_bad_targets() {
        assert!(matches!(
            TargetSpec::parse("127.0.0.1:9092"),
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(
            TargetSpec::parse("a b=embedded"),
            Err(TargetError::Name(_))
        ));
        assert!(matches!(
            TargetSpec::parse("x=embedded,amqp"),
            Err(TargetError::Option { .. })
        ));
        assert!(matches!(
            TargetSpec::parse("x=embedded,pid=3"),
            Err(TargetError::PidForEmbedded(_))
        ));
        assert_eq!(
            TargetSpec::parse_all(&["a=embedded".into(), "a=embedded,kafka".into()]),
            Err(TargetError::Duplicate("a".into()))
        );
    }
}
