//! The graph materialized from deltas: what a consumer holds after applying them.

use crate::deltas::{EdgeJson, RowJson};
use flowgraph_pipeline::{Edge, GraphRecord, Output, Row};
use flowgraph_schema::EventTime;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::Serialize;
use std::hash::{BuildHasher, Hash};

/// Rows and edges after applying every update up to the last progress mark.
///
/// Held in slots with a hash index (`Counts`), not in ordered maps: every live row is
/// retracted and inserted again each export period, so applying is the hot path (`replay`, the
/// web view), and an ordered map compared text at every level of its tree (docs/BENCHMARKS.md,
/// item 44). Order is made only where it is shown: [`GraphState::sorted_rows`],
/// [`GraphState::sorted_edges`] and the snapshot.
#[derive(Debug, Default, Clone)]
pub struct GraphState {
    rows: Counts<Row>,
    edges: Counts<Edge>,
    /// The last progress mark applied.
    progress: Option<EventTime>,
}

impl GraphState {
    /// Applies one output. Updates after the last progress mark count towards the next one.
    pub fn apply(&mut self, output: &Output) {
        match output {
            Output::Update { diff, record: GraphRecord::Row(row), .. } => self.rows.bump(row, *diff),
            Output::Update { diff, record: GraphRecord::Edge(edge), .. } => self.edges.bump(edge, *diff),
            Output::Progress(p) => self.progress = Some(*p),
        }
    }

    /// The time the state is complete at: the last progress mark minus one.
    pub fn time(&self) -> Option<EventTime> {
        self.progress.map(|p| p.saturating_sub(1))
    }

    /// The last progress mark applied.
    pub fn progress(&self) -> Option<EventTime> {
        self.progress
    }

    /// Current rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.keys()
    }

    /// Current edges, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.keys()
    }

    /// Current rows, sorted (`Row`'s order: field by field).
    pub fn sorted_rows(&self) -> Vec<&Row> {
        self.rows.sorted_keys()
    }

    /// Current edges, sorted (`Edge`'s order: field by field).
    pub fn sorted_edges(&self) -> Vec<&Edge> {
        self.edges.sorted_keys()
    }

    /// How many rows there are now.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// How many edges there are now.
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Records whose multiplicity is not 1: always empty unless the deltas are inconsistent.
    pub fn anomalies(&self) -> usize {
        self.rows.not_one() + self.edges.not_one()
    }

    /// The snapshot document: `{"time": T, "rows": [...], "edges": [...]}`, rows and edges
    /// sorted, so equal graphs give equal documents.
    pub fn snapshot_json(&self) -> String {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            time: Option<EventTime>,
            rows: Vec<RowJson<'a>>,
            edges: Vec<EdgeJson<'a>>,
        }
        let snapshot = Snapshot {
            time: self.time(),
            rows: self.sorted_rows().into_iter().map(RowJson::from).collect(),
            edges: self.sorted_edges().into_iter().map(EdgeJson::from).collect(),
        };
        serde_json::to_string_pretty(&snapshot).expect("snapshots always serialize")
    }
}

/// Records with their multiplicity, none at zero: the records in a vector of slots (a freed
/// slot is reused by the next insertion) and a hash table of slot numbers. A table of the
/// records themselves (88 bytes a bucket) touched every bucket of its doubled capacity; here
/// the slots grow as a vector (its capacity beyond the records never touched) and the index
/// costs 5 bytes a bucket, as the pipeline's `Stage` does.
#[derive(Debug, Clone)]
struct Counts<K> {
    slots: Vec<Option<(K, i64)>>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts { slots: Vec::new(), free: Vec::new(), index: HashTable::new() }
    }
}

impl<K: Hash + Ord + Clone> Counts<K> {
    /// Adds `diff` to the record's count, removing it at zero: one hash and one probe for the
    /// usual update (a retraction of a record present once, or an insertion of a new one).
    fn bump(&mut self, key: &K, diff: i64) {
        let hash = FxBuildHasher.hash_one(key);
        let slots = &mut self.slots;
        let is_key = |slot: &u32| slots[*slot as usize].as_ref().is_some_and(|(present, _)| present == key);
        match self.index.find_entry(hash, is_key) {
            Ok(entry) => {
                let slot = *entry.get();
                let count = &mut slots[slot as usize].as_mut().expect("indexed slots are in use").1;
                *count += diff;
                if *count == 0 {
                    entry.remove();
                    slots[slot as usize] = None;
                    self.free.push(slot);
                }
            }
            Err(_) if diff == 0 => {}
            Err(absent) => {
                let record = Some((key.clone(), diff));
                let slot = match self.free.pop() {
                    Some(slot) => {
                        slots[slot as usize] = record;
                        slot
                    }
                    None => {
                        slots.push(record);
                        u32::try_from(slots.len() - 1).expect("fewer than 2^32 rows or edges")
                    }
                };
                let rehash = |slot: &u32| FxBuildHasher.hash_one(&slots[*slot as usize].as_ref().expect("in use").0);
                absent.into_table().insert_unique(hash, slot, rehash);
            }
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn entries(&self) -> impl Iterator<Item = &(K, i64)> {
        self.slots.iter().flatten()
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries().map(|(key, _)| key)
    }

    fn sorted_keys(&self) -> Vec<&K> {
        let mut keys: Vec<&K> = self.keys().collect();
        // Keys are distinct, so an unstable sort gives the one order.
        keys.sort_unstable();
        keys
    }

    fn not_one(&self) -> usize {
        self.entries().filter(|(_, count)| *count != 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deltas::tests::any_record;
    use flowgraph_pipeline::Text;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The same record in new text allocations: equal by content, not by pointer.
    fn deep_copy(record: &GraphRecord) -> GraphRecord {
        let text = |t: &Text| Text::from(t.as_str());
        match record {
            GraphRecord::Row(row) => GraphRecord::Row(Row {
                from_entity: text(&row.from_entity),
                cmdline: text(&row.cmdline),
                to_entity: text(&row.to_entity),
                ..row.clone()
            }),
            GraphRecord::Edge(edge) => GraphRecord::Edge(Edge {
                from_entity: text(&edge.from_entity),
                to_entity: text(&edge.to_entity),
                ..edge.clone()
            }),
        }
    }

    proptest! {
        // Against ordered maps of counts: the records present, their order, the counts that
        // are not 1, whichever copy of a record an update carries, and slots freed and reused.
        #[test]
        fn applies_as_ordered_maps_of_counts(
            pool in prop::collection::vec(any_record(), 1..8),
            updates in prop::collection::vec((any::<prop::sample::Index>(), -2i64..=2, any::<bool>(), any::<bool>()), 0..200),
        ) {
            let mut graph = GraphState::default();
            let (mut rows, mut edges) = (BTreeMap::<Row, i64>::new(), BTreeMap::<Edge, i64>::new());
            let mut last_progress = None;
            for (step, (pick, diff, copied, mark)) in updates.into_iter().enumerate() {
                let record = pool[pick.index(pool.len())].clone();
                let carried = if copied { deep_copy(&record) } else { record.clone() };
                graph.apply(&Output::Update { time: step as u64, diff, record: carried });
                match record {
                    GraphRecord::Row(row) => *rows.entry(row).or_default() += diff,
                    GraphRecord::Edge(edge) => *edges.entry(edge).or_default() += diff,
                }
                rows.retain(|_, count| *count != 0);
                edges.retain(|_, count| *count != 0);
                if mark {
                    graph.apply(&Output::Progress(step as u64 + 1));
                    last_progress = Some(step as u64 + 1);
                }
                prop_assert_eq!(graph.sorted_rows(), rows.keys().collect::<Vec<_>>());
                prop_assert_eq!(graph.sorted_edges(), edges.keys().collect::<Vec<_>>());
                prop_assert_eq!((graph.row_count(), graph.edge_count()), (rows.len(), edges.len()));
                prop_assert_eq!(graph.rows().count() + graph.edges().count(), rows.len() + edges.len());
                let not_one = rows.values().chain(edges.values()).filter(|count| **count != 1).count();
                prop_assert_eq!(graph.anomalies(), not_one);
                prop_assert_eq!(graph.progress(), last_progress);
            }
        }
    }
}
