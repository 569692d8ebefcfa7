//! A canary's rules as a plain function of its alias record, the new version's counts
//! per service instance and the time: what the alias becomes next. No I/O; the driver
//! gathers the counts and writes what this returns.
//!
//! Choices:
//! - The error rate is judged over the whole canary (every invocation of the new version
//!   since its baseline), not per step. A version's error rate does not depend on its
//!   share of traffic, and a per-step rate would throw evidence away and wait for
//!   `min_sample` again at every step, delaying a rollback. (A failure that begins late
//!   is diluted by the good invocations before it; the next steps still catch it.)
//! - It is judged as soon as the canary has `min_sample` invocations and on every turn
//!   after, so a bad version goes back within a turn of reaching the sample.
//! - A step whose interval ends below `min_sample` still advances when the rate so far
//!   is within the limit: the author time-boxed the canary with `--every`, and holding
//!   a quiet function half-way forever serves nobody; the promotion's reason says how
//!   small the sample was. A step whose interval ends with a rate above the limit but
//!   below `min_sample` waits: too little evidence to roll back, too much to go on.
//! - Counts are added up turn by turn (`baseline` holds what each instance had served
//!   when last counted), so the invocations of an instance that goes away (its node
//!   stopped) stay counted.

use std::collections::BTreeMap;

use natsfn_protocol::version::{AliasRecord, Canary, CanaryState, Outcomes};

/// What a judgement changed, for the driver's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The first turn: the counts the new version's invocations are counted from.
    BaselineTaken,
    /// More invocations counted; the step goes on.
    Counted,
    /// The next step began.
    Stepped,
    Promoted,
    RolledBack,
}

/// The alias record to write and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    pub(crate) record: AliasRecord,
    pub(crate) change: Change,
}

/// What `record`'s running canary becomes, given the new version's counts per service
/// instance now; `None` when nothing changes (or no canary runs). The lease is left as
/// it is: the driver owns it.
pub(crate) fn judge(
    record: &AliasRecord,
    counts: &BTreeMap<String, Outcomes>,
    now_ms: u64,
) -> Option<Judgement> {
    let canary = record
        .canary
        .as_ref()
        .filter(|c| c.state == CanaryState::Running)?;
    let mut next = record.clone();
    let Some(seen) = &canary.baseline else {
        let mut canary = canary.clone();
        canary.baseline = Some(without_zeros(counts.clone()));
        canary.observed = Outcomes::default();
        if canary.step_started_ms == 0 {
            canary.step_started_ms = now_ms;
        }
        next.canary = Some(canary);
        return Some(Judgement {
            record: next,
            change: Change::BaselineTaken,
        });
    };
    let (added, remembered) = count_since(seen, counts);
    let mut canary = canary.clone();
    canary.baseline = Some(remembered);
    canary.observed = Outcomes {
        requests: canary.observed.requests.saturating_add(added.requests),
        errors: canary.observed.errors.saturating_add(added.errors),
    };
    let rate = error_rate(canary.observed);
    let over_limit = rate > canary.max_error_rate;
    let judged = canary.observed.requests >= canary.min_sample;
    let step_over = now_ms.saturating_sub(canary.step_started_ms) >= canary.every_ms;
    let change = if judged && over_limit {
        canary.state = CanaryState::RolledBack;
        canary.reason = Some(format!(
            "error rate {} above {}",
            rate_and_sample(canary.observed),
            percent(canary.max_error_rate)
        ));
        next.version = canary.from;
        next.weights.clear();
        Change::RolledBack
    } else if step_over && !over_limit && canary.step + 1 < canary.steps.len() {
        canary.step += 1;
        canary.step_started_ms = now_ms;
        next.weights = weights_for(canary.from, canary.steps[canary.step]);
        Change::Stepped
    } else if step_over && !over_limit {
        canary.state = CanaryState::Promoted;
        let mut reason = format!(
            "error rate {} within {}",
            rate_and_sample(canary.observed),
            percent(canary.max_error_rate)
        );
        if !judged {
            reason.push_str(&format!(
                ", below the minimum sample of {}",
                canary.min_sample
            ));
        }
        canary.reason = Some(reason);
        next.weights.clear();
        Change::Promoted
    } else {
        Change::Counted
    };
    next.canary = Some(canary);
    (next != *record).then_some(Judgement {
        record: next,
        change,
    })
}

/// The fraction of 5xx outcomes; 0 without invocations.
pub(crate) fn error_rate(observed: Outcomes) -> f64 {
    if observed.requests == 0 {
        0.0
    } else {
        observed.errors as f64 / observed.requests as f64
    }
}

/// `20.0% (40 of 200 invocations)`.
pub(crate) fn rate_and_sample(observed: Outcomes) -> String {
    format!(
        "{} ({} of {} invocations)",
        percent(error_rate(observed)),
        observed.errors,
        observed.requests
    )
}

/// The fraction of invocations the canary's step gives the new version.
pub(crate) fn new_version_share(canary: &Canary) -> f64 {
    canary.steps.get(canary.step).copied().unwrap_or(1.0)
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// The alias' weights when the new version gets `share`: the old version gets the rest,
/// rounded to 9 places so that `alias ls` shows 0.7 rather than 0.30000000000000004's
/// complement; none at all once the new version takes everything.
fn weights_for(from: u64, share: f64) -> BTreeMap<String, f64> {
    let rest = ((1.0 - share) * 1e9).round() / 1e9;
    if rest > 0.0 {
        BTreeMap::from([(from.to_string(), rest)])
    } else {
        BTreeMap::new()
    }
}

/// The invocations counted since `seen` (what each instance had served when last
/// counted), and what to remember now. An instance absent from `seen` counts from 0; so
/// does one whose counts went down (it restarted). One absent from `counts` (it did not
/// answer, or its node went away) is remembered as it was, so that nothing it served is
/// counted twice should it answer again.
fn count_since(
    seen: &BTreeMap<String, Outcomes>,
    counts: &BTreeMap<String, Outcomes>,
) -> (Outcomes, BTreeMap<String, Outcomes>) {
    let mut added = Outcomes::default();
    let mut remembered = seen.clone();
    for (instance, now) in counts {
        let before = seen.get(instance).copied().unwrap_or_default();
        let restarted = now.requests < before.requests || now.errors < before.errors;
        let since = if restarted {
            *now
        } else {
            Outcomes {
                requests: now.requests - before.requests,
                errors: now.errors - before.errors,
            }
        };
        added.requests = added.requests.saturating_add(since.requests);
        added.errors = added.errors.saturating_add(since.errors);
        remembered.insert(instance.clone(), *now);
    }
    (added, without_zeros(remembered))
}

/// An instance that served nothing counts the same whether remembered or not; leaving
/// it out keeps the record small and unchanged until something happens.
fn without_zeros(mut counts: BTreeMap<String, Outcomes>) -> BTreeMap<String, Outcomes> {
    counts.retain(|_, o| *o != Outcomes::default());
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_000_000;
    const MINUTE: u64 = 60_000;

    /// `natsfn alias set f live 5 --canary 10%,30%,100% --every 1m --max-error-rate 1%
    /// --min-sample 100` from version 4, as written.
    fn fresh() -> AliasRecord {
        AliasRecord::parse(
            br#"{"version": 5, "weights": {"4": 0.9}, "subjects": ["orders.new"],
                 "canary": {"steps": [0.1, 0.3, 1.0], "step": 0, "every_ms": 60000,
                 "max_error_rate": 0.01, "min_sample": 100, "from": 4, "state": "running",
                 "reason": null, "step_started_ms": 1000000, "baseline": null,
                 "observed": {"requests": 0, "errors": 0}}}"#,
        )
        .expect("a valid alias")
    }

    fn counts(instances: &[(&str, u64, u64)]) -> BTreeMap<String, Outcomes> {
        instances
            .iter()
            .map(|(id, requests, errors)| {
                (
                    id.to_string(),
                    Outcomes {
                        requests: *requests,
                        errors: *errors,
                    },
                )
            })
            .collect()
    }

    /// A canary past its first turn: baseline `a: 50/1` (served before the canary).
    fn started() -> AliasRecord {
        let judged = judge(&fresh(), &counts(&[("a", 50, 1)]), START + 10).unwrap();
        assert_eq!(judged.change, Change::BaselineTaken);
        judged.record
    }

    fn canary(record: &AliasRecord) -> &Canary {
        record.canary.as_ref().unwrap()
    }

    #[test]
    fn the_first_turn_takes_the_baseline_and_nothing_else() {
        let record = started();
        let c = canary(&record);
        assert_eq!(c.baseline, Some(counts(&[("a", 50, 1)])));
        assert_eq!(c.observed, Outcomes::default());
        assert_eq!((c.step, c.state), (0, CanaryState::Running));
        assert_eq!(c.step_started_ms, START, "the time the CLI wrote stays");
        assert_eq!(record.weights, BTreeMap::from([("4".to_string(), 0.9)]));
        // Even an interval long over is not judged before the baseline exists.
        let late = judge(&fresh(), &counts(&[("a", 500, 400)]), START + 10 * MINUTE).unwrap();
        assert_eq!(late.change, Change::BaselineTaken);
        assert_eq!(canary(&late.record).step, 0);
    }

    #[test]
    fn a_baseline_without_a_start_time_starts_the_step_now() {
        let mut record = fresh();
        record.canary.as_mut().unwrap().step_started_ms = 0;
        let judged = judge(&record, &BTreeMap::new(), START + 5).unwrap();
        let c = canary(&judged.record);
        assert_eq!(c.step_started_ms, START + 5);
        assert_eq!(c.baseline, Some(BTreeMap::new()));
    }

    #[test]
    fn invocations_count_from_the_baseline_and_new_instances_from_zero() {
        let judged = judge(
            &started(),
            &counts(&[("a", 70, 2), ("b", 15, 0)]),
            START + 1_000,
        )
        .unwrap();
        assert_eq!(judged.change, Change::Counted);
        let c = canary(&judged.record);
        assert_eq!(
            c.observed,
            Outcomes {
                requests: 35,
                errors: 1
            }
        );
        assert_eq!(c.baseline, Some(counts(&[("a", 70, 2), ("b", 15, 0)])));
        assert_eq!(judged.record.weights, started().weights);
    }

    #[test]
    fn nothing_new_changes_nothing() {
        let record = started();
        assert_eq!(
            judge(&record, &counts(&[("a", 50, 1)]), START + 1_000),
            None
        );
        // An instance that served nothing yet is no change either.
        assert_eq!(
            judge(
                &record,
                &counts(&[("a", 50, 1), ("b", 0, 0)]),
                START + 1_000
            ),
            None
        );
    }

    #[test]
    fn an_error_rate_above_the_limit_rolls_back_as_soon_as_the_sample_is_reached() {
        // 99 invocations, 20 of them failing: not judged yet.
        let record = judge(&started(), &counts(&[("a", 149, 21)]), START + 1_000)
            .unwrap()
            .record;
        assert_eq!(canary(&record).state, CanaryState::Running);
        assert_eq!(record.version, 5);
        // The 100th invocation arrives well before the step's end: back to version 4.
        let judged = judge(&record, &counts(&[("a", 250, 41)]), START + 2_000).unwrap();
        assert_eq!(judged.change, Change::RolledBack);
        let back = &judged.record;
        assert_eq!(back.version, 4);
        assert!(back.weights.is_empty());
        assert_eq!(back.subjects, vec!["orders.new".to_string()]);
        let c = canary(back);
        assert_eq!(c.state, CanaryState::RolledBack);
        assert_eq!(
            c.reason.as_deref(),
            Some("error rate 20.0% (40 of 200 invocations) above 1.0%")
        );
        back.validate().expect("a valid alias");
        // A finished canary is never judged again.
        assert_eq!(
            judge(back, &counts(&[("a", 900, 900)]), START + 9_000),
            None
        );
    }

    #[test]
    fn below_the_minimum_sample_no_rate_is_judged() {
        // 90 invocations, 89 of them failing.
        let judged = judge(&started(), &counts(&[("a", 140, 90)]), START + 1_000).unwrap();
        assert_eq!(judged.change, Change::Counted);
        assert_eq!(canary(&judged.record).state, CanaryState::Running);
        assert_eq!(judged.record.version, 5);
        // Its step is over, but with that rate it waits for the sample rather than go on.
        let held = judge(&judged.record, &counts(&[("a", 145, 91)]), START + MINUTE).unwrap();
        assert_eq!(held.change, Change::Counted);
        assert_eq!(canary(&held.record).step, 0);
    }

    #[test]
    fn a_step_advances_when_its_interval_is_over_and_the_rate_within_the_limit() {
        let record = started();
        let counted = judge(&record, &counts(&[("a", 250, 2)]), START + MINUTE - 1).unwrap();
        assert_eq!(counted.change, Change::Counted);
        assert_eq!(canary(&counted.record).step, 0);
        let judged = judge(&counted.record, &counts(&[("a", 251, 2)]), START + MINUTE).unwrap();
        assert_eq!(judged.change, Change::Stepped);
        let c = canary(&judged.record);
        assert_eq!((c.step, c.step_started_ms), (1, START + MINUTE));
        assert_eq!(new_version_share(c), 0.3);
        assert_eq!(
            judged.record.weights,
            BTreeMap::from([("4".to_string(), 0.7)])
        );
        assert_eq!(judged.record.version, 5);
        judged.record.validate().expect("a valid alias");
    }

    #[test]
    fn a_quiet_step_advances_below_the_minimum_sample() {
        let judged = judge(&started(), &counts(&[("a", 53, 1)]), START + MINUTE).unwrap();
        assert_eq!(judged.change, Change::Stepped);
        assert_eq!(canary(&judged.record).observed.requests, 3);
    }

    #[test]
    fn the_last_step_sends_everything_to_the_new_version_then_promotes() {
        let mut record = started();
        let mut now = START;
        for (step, requests) in [(1, 150), (2, 300)] {
            now += MINUTE;
            let judged = judge(&record, &counts(&[("a", requests, 1)]), now).unwrap();
            assert_eq!(judged.change, Change::Stepped);
            assert_eq!(canary(&judged.record).step, step);
            record = judged.record;
        }
        assert!(record.weights.is_empty(), "the 100% step has no weights");
        assert_eq!(record.version, 5);
        record.validate().expect("a valid alias");
        let promoted = judge(&record, &counts(&[("a", 450, 3)]), now + MINUTE).unwrap();
        assert_eq!(promoted.change, Change::Promoted);
        let c = canary(&promoted.record);
        assert_eq!(c.state, CanaryState::Promoted);
        assert_eq!(
            c.reason.as_deref(),
            Some("error rate 0.5% (2 of 400 invocations) within 1.0%")
        );
        assert_eq!(promoted.record.version, 5);
        assert!(promoted.record.weights.is_empty());
    }

    #[test]
    fn a_promotion_below_the_minimum_sample_says_so() {
        let mut record = started();
        let c = record.canary.as_mut().unwrap();
        c.step = 2;
        record.weights.clear();
        let promoted = judge(&record, &counts(&[("a", 60, 1)]), START + MINUTE).unwrap();
        assert_eq!(
            canary(&promoted.record).reason.as_deref(),
            Some(
                "error rate 0.0% (0 of 10 invocations) within 1.0%, below the minimum sample of 100"
            )
        );
    }

    #[test]
    fn a_restarted_instance_counts_from_zero() {
        let counted = judge(&started(), &counts(&[("a", 90, 3)]), START + 1_000).unwrap();
        assert_eq!(
            canary(&counted.record).observed,
            Outcomes {
                requests: 40,
                errors: 2
            }
        );
        // `a` went down from 90 to 7: it started over, so all 7 are new.
        let judged = judge(&counted.record, &counts(&[("a", 7, 1)]), START + 2_000).unwrap();
        let c = canary(&judged.record);
        assert_eq!(
            c.observed,
            Outcomes {
                requests: 47,
                errors: 3
            }
        );
        assert_eq!(c.baseline, Some(counts(&[("a", 7, 1)])));
    }

    #[test]
    fn an_instance_that_goes_away_stays_counted() {
        let counted = judge(
            &started(),
            &counts(&[("a", 90, 3), ("b", 20, 20)]),
            START + 1_000,
        )
        .unwrap();
        assert_eq!(canary(&counted.record).observed.requests, 60);
        // `b` does not answer: its 20 stay; when it answers again only its new ones count.
        let judged = judge(&counted.record, &counts(&[("a", 95, 3)]), START + 2_000).unwrap();
        assert_eq!(canary(&judged.record).observed.requests, 65);
        let back = judge(
            &judged.record,
            &counts(&[("a", 95, 3), ("b", 21, 20)]),
            START + 3_000,
        )
        .unwrap();
        assert_eq!(
            canary(&back.record).observed,
            Outcomes {
                requests: 66,
                errors: 22
            }
        );
    }

    #[test]
    fn the_lease_and_other_fields_are_left_alone() {
        let mut record = started();
        record.canary.as_mut().unwrap().lease = Some(natsfn_protocol::version::Lease {
            node: "n1".into(),
            until_ms: START + 3_000,
        });
        let judged = judge(&record, &counts(&[("a", 51, 1)]), START + 1_000).unwrap();
        assert_eq!(canary(&judged.record).lease, canary(&record).lease);
        assert_eq!(judged.record.subjects, record.subjects);
    }

    #[test]
    fn no_running_canary_no_judgement() {
        let plain = AliasRecord::parse(br#"{"version": 5}"#).unwrap();
        assert_eq!(judge(&plain, &counts(&[("a", 1, 1)]), START), None);
    }
}
