//! One [`Processor`] per raw partition, run side by side.
//!
//! Every event of an org arrives on one raw partition (ingest keys and partitions them by
//! org), so partitions share no state. Each gets a processor of its own, run on a small
//! thread pool: within a partition events keep their order, and across partitions there
//! is no order to keep. The pipeline takes a partition's processor out to run a batch of
//! its events as a job of its own ([`PartitionProcessors::take`]); [`process`] runs a
//! burst of events partition beside partition (a burst of one partition on the calling
//! thread), for single events and for measuring.
//!
//! [`process`]: PartitionProcessors::process
//!
//! Known shortcut: if the raw topic gains partitions, an org's events may move to another
//! partition. Its state then starts over there, as when a rebalance moves a partition to
//! another instance, and a snapshot it left open on the old partition is never ended
//! there: it holds back that partition's committed offset (a restart replays from it),
//! like the open snapshot of an org dropped from ingest mid-sync (see the processor's
//! module).

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;
use seatwatch_schemas::{LicenseKind, UserState};

use crate::metrics::Metrics;
use crate::processor::{Input, Output, Processor, StateEncoder};

/// The processors of the raw partitions this instance has seen, and the threads that run
/// them.
pub struct PartitionProcessors {
    source_topic: String,
    metrics: Metrics,
    encoder: StateEncoder,
    processors: BTreeMap<i32, Processor>,
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for PartitionProcessors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionProcessors")
            .field("partitions", &self.processors.keys().collect::<Vec<_>>())
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

impl PartitionProcessors {
    /// No processor yet, and `threads` threads to run them (0: one per CPU core).
    pub fn new(
        source_topic: impl Into<String>,
        metrics: Metrics,
        encoder: StateEncoder,
        threads: usize,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("transform-{index}"))
            .build()?;
        let pool = Arc::new(pool);
        Ok(Self {
            source_topic: source_topic.into(),
            metrics,
            encoder,
            processors: BTreeMap::new(),
            pool,
        })
    }

    /// How many threads run the processors.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The processor of `partition`, created empty if there is none.
    fn of(&mut self, partition: i32) -> &mut Processor {
        self.processors.entry(partition).or_insert_with(|| {
            Processor::with_encoder(
                self.source_topic.clone(),
                self.metrics.clone(),
                self.encoder.clone(),
            )
        })
    }

    /// See [`Processor::restore_license`].
    pub fn restore_license(
        &mut self,
        partition: i32,
        org_id: &str,
        kind: LicenseKind,
        license_id: &str,
    ) {
        self.of(partition)
            .restore_license(partition, org_id, kind, license_id);
    }

    /// See [`Processor::forget_license`].
    pub fn forget_license(
        &mut self,
        partition: i32,
        org_id: &str,
        kind: LicenseKind,
        license_id: &str,
    ) {
        if let Some(processor) = self.processors.get_mut(&partition) {
            processor.forget_license(org_id, kind, license_id);
        }
    }

    /// See [`Processor::restore_user`].
    pub fn restore_user(&mut self, partition: i32, state: UserState) {
        self.of(partition).restore_user(partition, state);
    }

    /// See [`Processor::forget_user`].
    pub fn forget_user(&mut self, partition: i32, org_id: &str, user_id: &str) {
        if let Some(processor) = self.processors.get_mut(&partition) {
            processor.forget_user(org_id, user_id);
        }
    }

    /// Processes a burst of events, each by its partition's processor. Returns, for each
    /// event, its index in `inputs` and its outputs: partition after partition, in order
    /// within each.
    pub fn process(&mut self, inputs: &[Input<'_>]) -> Vec<(usize, Vec<Output>)> {
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (index, input) in inputs.iter().enumerate() {
            by_partition.entry(input.partition).or_default().push(index);
        }
        for &partition in by_partition.keys() {
            self.of(partition);
        }

        let jobs: Vec<(&mut Processor, Vec<usize>)> = self
            .processors
            .iter_mut()
            .filter_map(|(partition, processor)| {
                by_partition
                    .remove(partition)
                    .map(|indices| (processor, indices))
            })
            .collect();
        let run = |(processor, indices): (&mut Processor, Vec<usize>)| {
            indices
                .into_iter()
                .map(|index| (index, processor.process(inputs[index])))
                .collect::<Vec<_>>()
        };
        let done: Vec<Vec<(usize, Vec<Output>)>> = if jobs.len() > 1 {
            self.pool
                .install(|| jobs.into_par_iter().map(run).collect())
        } else {
            jobs.into_iter().map(run).collect()
        };
        done.into_iter().flatten().collect()
    }

    /// Takes `partition`'s processor out (created empty if there is none), to run it on a
    /// thread of [`pool`](Self::pool); [`put_back`](Self::put_back) returns it. Nothing else
    /// may ask about the partition meanwhile.
    pub fn take(&mut self, partition: i32) -> Processor {
        self.of(partition);
        self.processors
            .remove(&partition)
            .expect("the processor was created above")
    }

    /// Returns a processor [`take`](Self::take) took out.
    pub fn put_back(&mut self, partition: i32, processor: Processor) {
        self.processors.insert(partition, processor);
    }

    /// The threads that run the processors.
    pub fn pool(&self) -> Arc<rayon::ThreadPool> {
        Arc::clone(&self.pool)
    }

    /// See [`Processor::committable_offset`].
    pub fn committable_offset(&self, partition: i32, last_processed: i64) -> i64 {
        match self.processors.get(&partition) {
            Some(processor) => processor.committable_offset(partition, last_processed),
            None => last_processed + 1,
        }
    }

    /// How many licences and users are remembered as published, over every partition.
    pub fn remembered(&self) -> (usize, usize) {
        self.processors
            .values()
            .map(Processor::remembered)
            .fold((0, 0), |(licenses, users), (l, u)| {
                (licenses + l, users + u)
            })
    }

    /// Forgets the state of `partition`, which another instance now owns.
    pub fn revoke(&mut self, partition: i32) {
        self.processors.remove(&partition);
    }
}

#[cfg(test)]
mod tests;
