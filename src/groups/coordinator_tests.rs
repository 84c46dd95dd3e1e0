//! The coordinator on a manual clock: the times its requests read (join,
//! sync, heartbeat) and its ticker's wait and expiry all come from the
//! coordinator's clock, so a session timeout is exact to the tick.

use super::*;
use crate::clock::ManualClock;
use crate::groups::state::tests::params;

/// Run the ticker's next tick: advance the clock by one [`TICK`] and let
/// the tick's sleep end. Returns the time the tick saw.
async fn tick(clock: &ManualClock, c: &Rc<Coordinator>) -> Instant {
    let weak = Rc::downgrade(c);
    let t = glommio::spawn_local(async move { next_tick(&weak).await.map(|(_, now, _)| now) });
    glommio::executor().yield_task_queue_now().await;
    clock.advance(TICK);
    t.await.expect("the coordinator is alive")
}

#[test]
fn a_silent_member_expires_one_tick_after_its_session_timeout_on_the_clock() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let clock = ManualClock::new();
        let config = BrokerConfig {
            group_initial_rebalance_delay_ms: 0,
            ..Default::default()
        };
        let c = Rc::new(Coordinator::new(&config, clock.clone()));
        let mut rx = c
            .with_group("g", true, |g| g.join(params(""), c.clock.now()))
            .unwrap();
        let joined = rx.try_recv().unwrap().expect("answered at once").unwrap();
        let id = joined.member_id.clone();
        let me = || MemberRef::dynamic(&id);
        let step = c
            .with_group("g", false, |g| {
                g.sync(
                    me(),
                    joined.generation,
                    vec![(id.clone(), Bytes::from_static(b"all"))],
                    c.clock.now(),
                )
            })
            .unwrap();
        assert!(matches!(step, SyncStep::Now(_)));
        // 4 s of ticks, then a heartbeat: the session runs from then.
        for _ in 0..20 {
            tick(&clock, &c).await;
        }
        assert_eq!(clock.elapsed(), Duration::from_millis(4000));
        c.heartbeat("g", me(), joined.generation).unwrap();
        // Exactly 6 s after the heartbeat the member is still there
        // (expiry is strictly after the session timeout)...
        for _ in 0..30 {
            tick(&clock, &c).await;
            assert_eq!(c.groups.borrow()["g"].members.len(), 1, "removed early");
        }
        assert_eq!(clock.elapsed(), Duration::from_millis(10_000));
        // ...and the next tick removes it.
        tick(&clock, &c).await;
        assert!(c.groups.borrow()["g"].members.is_empty());
        assert_eq!(c.groups.borrow()["g"].phase, Phase::Empty);
        assert_eq!(
            c.heartbeat("g", me(), joined.generation),
            Err(GroupError::UnknownMember)
        );
    });
}
