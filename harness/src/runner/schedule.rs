//! Delivery schedules: how a `send` is cut into writes.

use std::time::Duration;

use crate::scenario::template::Field;
use crate::scenario::Schedule;

/// Pause between writes that are meant to arrive separately. With `TCP_NODELAY` a millisecond is
/// enough for loopback segments to reach the server as distinct reads.
pub const SPLIT_PAUSE: Duration = Duration::from_millis(1);

/// Beyond this many writes in one send, stop pausing: huge fields (V-11's 10 000 octets) would
/// otherwise take seconds, and the first writes already exercise the parser's re-entry.
pub const MAX_PAUSED_WRITES: usize = 96;

/// The writes for one send under `schedule` (coalescing across steps is decided by the player).
pub fn plan(fields: &[Field], schedule: Schedule) -> Vec<Vec<u8>> {
    match schedule {
        Schedule::AsWritten | Schedule::Coalesced => {
            let mut out = vec![Vec::new()];
            for f in fields {
                if let Some(w) = out.last_mut() {
                    w.extend_from_slice(&f.bytes);
                }
                if f.boundary_after {
                    out.push(Vec::new());
                }
            }
            out.retain(|w| !w.is_empty());
            out
        }
        Schedule::FieldSplit => fields.iter().filter(|f| !f.bytes.is_empty()).map(|f| f.bytes.clone()).collect(),
        Schedule::OneByte => fields.iter().flat_map(|f| f.bytes.iter().map(|b| vec![*b])).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::template::{Template, Vars};

    #[test]
    fn plans_follow_the_schedule() {
        let f = Template::parse("05 0102 ; 03").unwrap().render(&Vars::new()).unwrap();
        assert_eq!(plan(&f, Schedule::AsWritten), vec![vec![5, 1, 2], vec![3]]);
        assert_eq!(plan(&f, Schedule::FieldSplit), vec![vec![5], vec![1, 2], vec![3]]);
        assert_eq!(plan(&f, Schedule::OneByte), vec![vec![5], vec![1], vec![2], vec![3]]);
    }
}
