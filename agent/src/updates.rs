//! One task's queue of status updates awaiting acknowledgement (Mesos semantics): only the
//! head is in flight; it is resent with a doubling interval until its uuid is acknowledged,
//! then the next one goes out. Time is an argument; the agent checkpoints the pending list.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use atoll_proto::model::TaskStatus;

/// What an acknowledgement did to the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// The head was acknowledged and removed.
    Head(TaskStatus),
    /// The uuid is not the head's (a stale or duplicate acknowledgement); nothing changed.
    NotHead,
}

#[derive(Debug, Clone)]
pub struct UpdateQueue {
    pending: VecDeque<TaskStatus>,
    /// When the head is (re)sent next; `None` while nothing is pending.
    next_send: Option<Instant>,
    interval: Duration,
    first_interval: Duration,
    max_interval: Duration,
}

impl UpdateQueue {
    pub fn new(first_interval: Duration, max_interval: Duration) -> UpdateQueue {
        UpdateQueue {
            pending: VecDeque::new(),
            next_send: None,
            interval: first_interval,
            first_interval,
            max_interval: max_interval.max(first_interval),
        }
    }

    /// A queue holding checkpointed updates; the head is due at once.
    pub fn restore(
        pending: impl IntoIterator<Item = TaskStatus>,
        first_interval: Duration,
        max_interval: Duration,
        now: Instant,
    ) -> UpdateQueue {
        let mut queue = UpdateQueue::new(first_interval, max_interval);
        queue.pending.extend(pending);
        if !queue.pending.is_empty() {
            queue.next_send = Some(now);
        }
        queue
    }

    pub fn push(&mut self, status: TaskStatus, now: Instant) {
        self.pending.push_back(status);
        if self.pending.len() == 1 {
            self.start_head(now);
        }
    }

    pub fn head(&self) -> Option<&TaskStatus> {
        self.pending.front()
    }

    pub fn pending(&self) -> impl Iterator<Item = &TaskStatus> {
        self.pending.iter()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The head, if its (re)send time has come.
    pub fn due(&self, now: Instant) -> Option<&TaskStatus> {
        match self.next_send {
            Some(at) if at <= now => self.pending.front(),
            _ => None,
        }
    }

    /// Records that the head went out: the next resend waits the current interval, which then
    /// doubles (up to the maximum).
    pub fn sent(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        self.next_send = Some(now + self.interval);
        self.interval = (self.interval * 2).min(self.max_interval);
    }

    /// After a (re)registration the master may have lost what was in flight: send the head now.
    pub fn resend_now(&mut self, now: Instant) {
        if !self.pending.is_empty() {
            self.next_send = Some(now);
        }
    }

    pub fn ack(&mut self, uuid: uuid::Uuid, now: Instant) -> Ack {
        if self.pending.front().and_then(|s| s.uuid) != Some(uuid) {
            return Ack::NotHead;
        }
        let Some(head) = self.pending.pop_front() else { return Ack::NotHead };
        if self.pending.is_empty() {
            self.next_send = None;
        } else {
            self.start_head(now);
        }
        Ack::Head(head)
    }

    /// When the head is due next, if anything is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_send.filter(|_| !self.pending.is_empty())
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.next_send = None;
        self.interval = self.first_interval;
    }

    fn start_head(&mut self, now: Instant) {
        self.interval = self.first_interval;
        self.next_send = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_proto::model::{Source, TaskId, TaskState, Time};

    fn status(state: TaskState, n: u128) -> TaskStatus {
        let mut s = TaskStatus::new(TaskId::new("t"), state, Source::Executor, Time(0));
        s.uuid = Some(uuid::Uuid::from_u128(n));
        s
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn only_the_head_is_sent_and_resent_with_backoff() {
        let t0 = Instant::now();
        let mut q = UpdateQueue::new(2 * S, 5 * S);
        assert_eq!(q.due(t0), None);
        q.push(status(TaskState::Starting, 1), t0);
        q.push(status(TaskState::Running, 2), t0);
        assert_eq!(q.due(t0).map(|s| s.state), Some(TaskState::Starting));
        q.sent(t0);
        assert_eq!(q.due(t0 + S), None);
        assert_eq!(q.next_due(), Some(t0 + 2 * S));
        q.sent(t0 + 2 * S);
        assert_eq!(q.next_due(), Some(t0 + 6 * S), "interval doubled");
        q.sent(t0 + 6 * S);
        assert_eq!(q.next_due(), Some(t0 + 11 * S), "capped at the maximum");
        q.resend_now(t0 + 7 * S);
        assert!(q.due(t0 + 7 * S).is_some());
    }

    #[test]
    fn ack_of_the_head_moves_on_and_others_are_ignored() {
        let t0 = Instant::now();
        let mut q = UpdateQueue::new(2 * S, 60 * S);
        q.push(status(TaskState::Starting, 1), t0);
        q.push(status(TaskState::Running, 2), t0);
        q.sent(t0);
        q.sent(t0 + 2 * S);
        assert_eq!(q.ack(uuid::Uuid::from_u128(2), t0), Ack::NotHead);
        assert_eq!(q.len(), 2);
        let Ack::Head(acked) = q.ack(uuid::Uuid::from_u128(1), t0 + 3 * S) else { panic!("head not acked") };
        assert_eq!(acked.state, TaskState::Starting);
        assert_eq!(q.due(t0 + 3 * S).map(|s| s.state), Some(TaskState::Running), "next head due at once");
        q.sent(t0 + 3 * S);
        assert_eq!(q.next_due(), Some(t0 + 5 * S), "backoff restarts for a new head");
        assert!(matches!(q.ack(uuid::Uuid::from_u128(2), t0), Ack::Head(_)));
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
        assert_eq!(q.ack(uuid::Uuid::from_u128(2), t0), Ack::NotHead, "duplicate ack");
    }

    #[test]
    fn restored_queue_is_due_at_once() {
        let t0 = Instant::now();
        let q = UpdateQueue::restore([status(TaskState::Finished, 3)], S, 60 * S, t0);
        assert_eq!(q.due(t0).map(|s| s.state), Some(TaskState::Finished));
        let empty = UpdateQueue::restore([], S, 60 * S, t0);
        assert_eq!(empty.next_due(), None);
    }
}
