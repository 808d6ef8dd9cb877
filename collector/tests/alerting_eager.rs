//! Eager evaluation: with it, a group also runs soon after new samples arrive (at most
//! every quarter of its interval), so an alert does not wait for the group's next tick;
//! without it, the group runs on its interval only, as Prometheus's do.

mod alerting_common;
mod api_common;

use std::time::{Duration, Instant};

use alerting_common::{Running, config, start_with};
use anyhow::{Result, ensure};

/// A long interval, so "on the next tick" and "soon after the data" are seconds apart.
const RULES: &str = r#"groups:
  - name: eager
    interval: 8s
    rules:
      - alert: Hot
        expr: temp_celsius > 90
"#;

/// Starts a collector, lets its first evaluation pass, pushes a hot sample, and returns
/// it with the time of the push.
async fn hot_after_first_eval(dir: &std::path::Path, eager: bool) -> Result<(Running, Instant)> {
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let mut cfg = config(&dir.join("data"), &[&rules]);
    cfg.alerting.eager_evaluation = eager;
    let c = start_with(cfg, None, None).await?;
    // The first evaluation runs as the evaluator starts; wait for it to be counted.
    c.wait_json("/api/v1/rules", |v| {
        v["data"]["groups"][0]["lastEvaluation"]
            .as_str()
            .is_some_and(|t| !t.starts_with("0001"))
    })
    .await?;
    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    Ok((c, Instant::now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_samples_are_evaluated_before_the_next_tick() -> Result<()> {
    let (eager_dir, tick_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (eager, tick) = tokio::join!(
        hot_after_first_eval(eager_dir.path(), true),
        hot_after_first_eval(tick_dir.path(), false)
    );
    let ((eager, pushed_eager), (tick, pushed_tick)) = (eager?, tick?);

    // Eager: within a quarter interval (2 s) of the first evaluation, well before 8 s.
    eager.wait_alert("Hot", "firing").await?;
    let waited = pushed_eager.elapsed();
    ensure!(
        waited < Duration::from_secs(5),
        "eager evaluation fired {waited:?} after the sample"
    );

    // On the interval only: nothing before the next tick, 8 s after the first.
    let quiet_until = pushed_tick + Duration::from_secs(4);
    while Instant::now() < quiet_until {
        ensure!(
            tick.alerts().await?.is_empty(),
            "evaluated before its tick without eager evaluation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tick.wait_alert("Hot", "firing").await?;
    eager.stop().await?;
    tick.stop().await?;
    Ok(())
}
