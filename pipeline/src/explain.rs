//! Why an address has the name it has: every source's current name and the rule that chose.

use flowgraph_schema::{EventTime, NameSource};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// How the job names an address at its input frontier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameExplanation {
    /// The address explained.
    pub addr: IpAddr,
    /// The time the explanation holds at: the job's input frontier (every name record before
    /// it is applied).
    pub at: EventTime,
    /// The name the graph shows as `to_entity` for this address.
    pub to_entity: String,
    /// What decided it.
    pub decided_by: NamedBy,
    /// Every source that has named the address (or withdrawn its name), in precedence order.
    pub candidates: Vec<NameCandidate>,
}

/// The rule that named an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedBy {
    /// A loopback address is named after the process's own entity, whatever the sources say.
    Loopback,
    /// The first source in precedence order with a non-empty name.
    Source(NameSource),
    /// No source names it: the address as text.
    Address,
}

/// One source's current word on an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCandidate {
    /// Who.
    pub source: NameSource,
    /// The name; '' when the source withdrew its earlier name.
    pub name: String,
    /// Event time of the record that set it.
    pub since: EventTime,
}

impl fmt::Display for NameExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "address:   {}", self.addr)?;
        writeln!(f, "at:        {} (event time, ns)", self.at)?;
        match &self.decided_by {
            NamedBy::Loopback => {
                writeln!(f, "to_entity: the process's own entity (loopback addresses stay inside it)")?
            }
            NamedBy::Source(source) => writeln!(f, "to_entity: {} (named by {source})", self.to_entity)?,
            NamedBy::Address => writeln!(f, "to_entity: {} (no source names it)", self.to_entity)?,
        }
        writeln!(f, "precedence: kubernetes > dns > static > reverse_dns > the address")?;
        if self.candidates.is_empty() {
            writeln!(f, "sources:   none has named this address")?;
        }
        for candidate in &self.candidates {
            let chosen = self.decided_by == NamedBy::Source(candidate.source);
            let name = if candidate.name.is_empty() { "(withdrawn)" } else { &candidate.name };
            writeln!(
                f,
                "  {} {:<12} {:<40} since {}",
                if chosen { "*" } else { " " },
                candidate.source.as_str(),
                name,
                candidate.since
            )?;
        }
        Ok(())
    }
}
