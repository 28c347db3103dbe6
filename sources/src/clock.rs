//! Event-time position of one ordered stream of records from several sources (a Kafka
//! partition, a recording): how far its agents' progress records say it has got.
//!
//! An agent sends a progress record every progress period (1 s by default; at least once an
//! export period), even when idle: "nothing older than this time will come from me". The
//! least latest progress over the sources heard from is how far the stream is complete; its
//! largest event time minus lateness is a floor, so a stream whose sources send no progress
//! still moves. The Kafka source keeps one clock per
//! partition and hands the job their minimum; an in-process replay keeps one for its file.

// The agents' progress period (`flowgraph agent --progress-period`, 1 s by default): every
// running agent sends a record at least this often, so within this much event time of a
// stream's start every agent on it has sent one (arriving up to `lateness` later).
use flowgraph_schema::AGENT_PROGRESS_PERIOD_NS;
// A running agent sends progress at least this often: one not heard from for longer (beyond
// lateness) has left.
use flowgraph_schema::AGENT_SILENCE_LIMIT_NS;
use flowgraph_schema::{EventTime, Record};
use std::collections::BTreeMap;

/// How far one stream of records has got in event time (see the module docs).
#[derive(Debug, Default)]
pub struct SourceClock {
    /// Latest progress time per source seen on the stream.
    progress: BTreeMap<String, EventTime>,
    /// The least of `progress`, kept as progress arrives: the watermark is asked for every
    /// record, progress records are a few per export period.
    least_progress: EventTime,
    /// Event time of the stream's first record.
    first_seen: Option<EventTime>,
    /// Largest event time of any record on the stream.
    max_seen: EventTime,
}

impl SourceClock {
    /// Takes in one record of the stream, in the stream's order.
    pub fn observe(&mut self, record: &Record) {
        self.observe_time(record.time());
        if let Record::Progress(p) = record {
            match self.progress.get_mut(&p.source) {
                Some(latest) if p.time_ > *latest => {
                    let was_least = *latest == self.least_progress;
                    *latest = p.time_;
                    // Only a source at the minimum can raise it: one scan per round of
                    // reports, not one per report (a partition may carry a thousand agents).
                    if was_least {
                        self.least_progress = self.progress.values().min().copied().unwrap_or(0);
                    }
                }
                Some(_) => {}
                None => {
                    let least = if self.progress.is_empty() { p.time_ } else { self.least_progress.min(p.time_) };
                    self.least_progress = least;
                    self.progress.insert(p.source.clone(), p.time_);
                }
            }
        }
    }

    /// Takes in the event time of one record of the stream, in the stream's order, without
    /// the record (for a caller that only learns after handing it on whether it counts).
    pub fn observe_time(&mut self, time: EventTime) {
        self.first_seen.get_or_insert(time);
        self.max_seen = self.max_seen.max(time);
    }

    /// max(the least latest progress over its sources, its largest event time - lateness),
    /// counting progress only once the stream has carried one agent progress period plus
    /// `lateness` of event time.
    ///
    /// A source whose latest progress trails the stream's largest event time by more than
    /// `lateness` plus [`AGENT_SILENCE_LIMIT_NS`] has gone quiet while others went on (an agent
    /// that left: its node drained, its process stopped; a running agent reports at least that
    /// often, and its reports arrive at most `lateness` behind): it is forgotten here, so that
    /// it no longer holds the least progress. Otherwise one departed agent would leave the
    /// stream a lateness behind for good. If it reports again, it joins anew.
    ///
    /// Progress speaks only for the sources that sent it. A running agent's first record on
    /// the stream is at most one progress period ([`AGENT_PROGRESS_PERIOD_NS`]) past the
    /// stream's start, and arrives at most `lateness` behind the stream's newest record; until
    /// the stream has spanned both, an agent not heard from yet may still come, and the first
    /// agents' progress would make its first batch late. After that, a source new to the
    /// stream is a joiner (an agent started since, or one with a longer progress period), and
    /// its first records may be late.
    pub fn watermark(&mut self, lateness: EventTime) -> EventTime {
        let by_lateness = self.max_seen.saturating_sub(lateness);
        let departed_before = by_lateness.saturating_sub(AGENT_SILENCE_LIMIT_NS);
        if self.least_progress < departed_before && !self.progress.is_empty() {
            // One scan when the least falls behind, then not again until another does.
            self.progress.retain(|_, latest| *latest >= departed_before);
            self.least_progress = self.progress.values().min().copied().unwrap_or(0);
        }
        let spanned = self.first_seen.map_or(0, |first| self.max_seen - first);
        if spanned < lateness.saturating_add(AGENT_PROGRESS_PERIOD_NS) {
            return by_lateness;
        }
        self.least_progress.max(by_lateness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_schema::Progress;

    const SECOND: EventTime = 1_000_000_000;

    fn progress(source: &str, time_: EventTime) -> Record {
        Record::Progress(Progress { time_, source: source.into(), losses: Default::default() })
    }

    #[test]
    fn progress_moves_the_clock_only_after_lateness_and_a_progress_period_of_event_time() {
        let lateness = 30 * SECOND;
        let mut clock = SourceClock::default();
        assert_eq!(clock.watermark(lateness), 0);
        // At start, agent a's progress arrives before agent b's first batch, which is older:
        // b is not known yet, so a's progress must not let the clock pass b's records.
        clock.observe(&progress("agent-a", 100 * SECOND));
        assert_eq!(clock.watermark(lateness), 70 * SECOND, "lateness alone while warming up");
        clock.observe(&progress("agent-b", 99 * SECOND));
        clock.observe(&progress("agent-a", 130 * SECOND));
        clock.observe(&progress("agent-b", 129 * SECOND));
        assert_eq!(clock.watermark(lateness), 100 * SECOND, "lateness alone at 30 s spanned");
        // Agent c's first record is a progress period into the stream, and arrives `lateness`
        // behind the stream's newest record: it is not late.
        let c_first = 100 * SECOND + AGENT_PROGRESS_PERIOD_NS - 1;
        clock.observe(&progress("agent-a", c_first + lateness));
        assert!(clock.watermark(lateness) <= c_first);
        clock.observe(&progress("agent-c", c_first));
        // Once the stream spans lateness and a progress period, the least progress over its
        // sources leads.
        for source in ["agent-a", "agent-b", "agent-c"] {
            clock.observe(&progress(source, 131 * SECOND));
        }
        assert_eq!(clock.watermark(lateness), 131 * SECOND);
    }

    #[test]
    fn a_source_quiet_for_longer_than_lateness_and_the_silence_limit_no_longer_holds_the_clock() {
        let lateness = 30 * SECOND;
        let limit = AGENT_SILENCE_LIMIT_NS / SECOND;
        let mut clock = SourceClock::default();
        // b reports every second until 5 s, then leaves; a goes on.
        for second in 0..=5 + 30 + limit {
            clock.observe(&progress("agent-a", second * SECOND));
            if second <= 5 {
                clock.observe(&progress("agent-b", second * SECOND));
            }
        }
        // Until the stream is a lateness and the silence limit past b's last report, b may
        // still be running (its next report late): it holds the clock, the lateness leads.
        assert_eq!(clock.watermark(lateness), (5 + limit) * SECOND, "b still holds the clock");
        // Then it is gone, and a's progress leads (before: a lateness behind, for as long as
        // the stream ran).
        clock.observe(&progress("agent-a", (6 + 30 + limit) * SECOND));
        assert_eq!(clock.watermark(lateness), (6 + 30 + limit) * SECOND, "a departed agent holds the clock");
        // b comes back: it joins anew, from its report on.
        clock.observe(&progress("agent-b", (7 + 30 + limit) * SECOND));
        clock.observe(&progress("agent-a", (8 + 30 + limit) * SECOND));
        assert_eq!(clock.watermark(lateness), (7 + 30 + limit) * SECOND);
        clock.observe(&progress("agent-b", (9 + 30 + limit) * SECOND));
        assert_eq!(clock.watermark(lateness), (8 + 30 + limit) * SECOND);
    }

    #[test]
    fn a_running_source_reporting_a_lateness_and_more_behind_is_not_forgotten() {
        // A lateness shorter than the progress period plus the arrival disorder (the bench's
        // auto lateness is 1.5 s): b's reports trail the newest record by up to 2.5 s, and it
        // must keep holding the clock, or its own records would be late.
        let lateness = 1_500_000_000;
        let mut clock = SourceClock::default();
        for second in 0..100 {
            clock.observe(&progress("agent-a", second * SECOND + SECOND / 2));
            clock.observe(&progress("agent-b", second.saturating_sub(2) * SECOND));
        }
        // max(b's 97 s, 99.5 - 1.5 s): not a's 99.5 s, which forgetting b would give.
        assert_eq!(clock.watermark(lateness), 98 * SECOND);
        assert!(clock.progress.contains_key("agent-b"), "a running agent was forgotten");
    }

    #[test]
    fn the_least_progress_kept_as_reports_arrive_is_the_least_over_the_sources() {
        let mut clock = SourceClock::default();
        // Sources joining, reporting out of order, repeating and tying at the minimum.
        for round in 0..50u64 {
            for source in 0..7u64 {
                let time = (round * 3 + (source * 5 + round) % 7) * SECOND;
                clock.observe(&progress(&format!("agent-{}", (source + round) % (2 + round.min(5))), time));
                let least = clock.progress.values().min().copied().unwrap_or(0);
                assert_eq!(clock.least_progress, least, "round {round}, source {source}");
            }
        }
    }
}
