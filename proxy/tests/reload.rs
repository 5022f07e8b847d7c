//! File mode reloads: revocation without restart, broken files, editors
//! that replace the file, ConfigMap-style symlink swaps.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn chat(h: &Harness, t: &TestToken) -> u16 {
    h.post_json(
        "/v1/chat/completions",
        &[("authorization", &t.bearer())],
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn revoking_by_rewriting_the_file_takes_effect_within_a_second() {
    let mock = mock().await;
    let (alice, bob) = (
        TestToken::new("alice", &["openai"], ""),
        TestToken::new("bob", &["openai"], ""),
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice, &bob])).await;
    assert_eq!(h.admin("/readyz").await.status, 200);
    assert_eq!(chat(&h, &alice).await, 200);
    assert_eq!(chat(&h, &bob).await, 200);

    replace_file(&h.config, &config_yaml(&mock.url(), &[&bob]));
    let took = h
        .eventually(Duration::from_secs(1), || async {
            chat(&h, &alice).await == 401
        })
        .await;
    eprintln!("revocation took {took:?}");
    assert_eq!(chat(&h, &bob).await, 200, "the others keep working");
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &alice.bearer())],
            json!({}),
        )
        .await;
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked or does not exist")
    );
    assert_eq!(h.metric("strake_config_reloads_total").await, 1.0);
    assert_eq!(h.metric("strake_index_tokens").await, 1.0);
    // Alice's series went with her.
    assert!(!h.admin("/metrics").await.text().contains("token=\"alice\""));

    // Re-adding a token (editing in place, not replacing) works as well.
    std::fs::write(&h.config, config_yaml(&mock.url(), &[&alice, &bob])).unwrap();
    h.eventually(Duration::from_secs(2), || async {
        chat(&h, &alice).await == 200
    })
    .await;
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_config_and_is_counted() {
    let mock = mock().await;
    let alice = TestToken::new("alice", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice])).await;
    let failures = || async { h.metric("strake_config_reload_failures_total").await };

    for (i, broken) in [
        "upstreams: [\n".to_string(), // bad YAML
        config_yaml(&mock.url(), &[&alice]).replace("upstreams: [openai]", "upstreams: [nope]"), // unknown upstream
        config_yaml(&mock.url(), &[&alice, &alice]), // duplicate hash
        config_yaml(&mock.url(), &[&alice]).replacen(
            &format!("apiKey: {KEY}"),
            "apiKeyEnv: STRAKE_TEST_UNSET_VAR",
            1,
        ),
        String::new(), // emptied
    ]
    .into_iter()
    .enumerate()
    {
        replace_file(&h.config, &broken);
        h.eventually(Duration::from_secs(2), || async {
            failures().await == (i + 1) as f64
        })
        .await;
        assert_eq!(
            chat(&h, &alice).await,
            200,
            "case {i}: the last good config serves"
        );
    }
    assert_eq!(h.metric("strake_config_reloads_total").await, 0.0);
    assert_eq!(h.admin("/readyz").await.status, 200);

    // Fixing the file applies it.
    let bob = TestToken::new("bob", &["openai"], "");
    replace_file(&h.config, &config_yaml(&mock.url(), &[&bob]));
    h.eventually(Duration::from_secs(2), || async {
        chat(&h, &bob).await == 200
    })
    .await;
    assert_eq!(chat(&h, &alice).await, 401);
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    // Kubernetes mounts ConfigMaps as strake.yaml -> ..data/strake.yaml,
    // ..data -> ..2024_01_01_v1; an update swaps the ..data link.
    let mock = mock().await;
    let (alice, bob) = (
        TestToken::new("alice", &["openai"], ""),
        TestToken::new("bob", &["openai"], ""),
    );
    let dir = TempDir::new();
    let v1 = dir.path("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("strake.yaml"), config_yaml(&mock.url(), &[&alice])).unwrap();
    std::os::unix::fs::symlink("..v1", dir.path("..data")).unwrap();
    std::os::unix::fs::symlink("..data/strake.yaml", dir.path("strake.yaml")).unwrap();
    let proxy = strake_proxy::start(strake_proxy::Options {
        source: strake_proxy::ConfigSource::File(dir.path("strake.yaml")),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        reload: strake_proxy::ReloadTiming {
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let h = Harness {
        dir: TempDir::new(),
        config: dir.path("strake.yaml"),
        proxy,
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    };
    assert_eq!(chat(&h, &alice).await, 200);

    let v2 = dir.path("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("strake.yaml"), config_yaml(&mock.url(), &[&bob])).unwrap();
    std::os::unix::fs::symlink("..v2", dir.path("..data_tmp")).unwrap();
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    h.eventually(Duration::from_secs(1), || async {
        chat(&h, &alice).await == 401
    })
    .await;
    assert_eq!(chat(&h, &bob).await, 200);
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn rate_limit_state_survives_a_reload() {
    let mock = mock().await;
    let limited = TestToken::new(
        "limited",
        &["openai"],
        "    limits: {requestsPerMinute: 2}\n",
    );
    let other = TestToken::new("other", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&limited])).await;
    assert_eq!(chat(&h, &limited).await, 200);
    assert_eq!(chat(&h, &limited).await, 200);
    assert_eq!(chat(&h, &limited).await, 429);
    replace_file(&h.config, &config_yaml(&mock.url(), &[&limited, &other]));
    h.eventually(Duration::from_secs(2), || async {
        chat(&h, &other).await == 200
    })
    .await;
    assert_eq!(
        chat(&h, &limited).await,
        429,
        "a reload does not refill the bucket"
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_file_rewritten_over_and_over_is_still_reloaded() {
    // The file rewritten every 10 ms, far faster than the 100 ms poll, so
    // that it never looks still: the change must land anyway, within the
    // reload bound.
    let mock = mock().await;
    let (alice, bob) = (
        TestToken::new("alice", &["openai"], ""),
        TestToken::new("bob", &["openai"], ""),
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice, &bob])).await;
    assert_eq!(chat(&h, &alice).await, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, text, stop) = (
            h.config.clone(),
            config_yaml(&mock.url(), &[&bob]),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                replace_file(&path, &text);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let revoked = h
        .eventually(Duration::from_secs(15), || async {
            chat(&h, &alice).await == 401
        })
        .await;
    eprintln!("revoked after {revoked:?} of rewrites");
    assert_eq!(chat(&h, &bob).await, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_slow_write_in_place_is_not_applied_half_way() {
    use std::io::Write;
    let mock = mock().await;
    let (alice, bob, carol) = (
        TestToken::new("alice", &["openai"], ""),
        TestToken::new("bob", &["openai"], ""),
        TestToken::new("carol", &["openai"], ""),
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice, &bob])).await;
    assert_eq!(chat(&h, &bob).await, 200);
    let next = config_yaml(&mock.url(), &[&alice, &bob, &carol]);
    // The first part alone is a valid file without bob and carol.
    let (first, rest) = next.split_at(next.find("  - name: bob").unwrap());
    let mut f = std::fs::File::create(&h.config).unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    // The writer pauses for several polls, well within the settle time.
    let paused = std::time::Instant::now();
    let mut refused = 0;
    while paused.elapsed() < Duration::from_millis(600) {
        if chat(&h, &bob).await != 200 {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.write_all(rest.as_bytes()).unwrap();
    f.flush().unwrap();
    drop(f);
    let written = std::time::Instant::now();
    while chat(&h, &carol).await != 200 {
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "the finished file was never applied"
        );
        if chat(&h, &bob).await != 200 {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refused, 0,
        "bob was refused while the file was half-written"
    );
    assert_eq!(h.metric("strake_config_reloads_total").await, 1.0);
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_refused_file_shows_in_the_last_reload_metrics() {
    let mock = mock().await;
    let (alice, bob) = (
        TestToken::new("alice", &["openai"], ""),
        TestToken::new("bob", &["openai"], ""),
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice, &bob])).await;
    let ok = "strake_config_last_reload_successful";
    let at = "strake_config_last_reload_success_timestamp_seconds";
    assert_eq!(h.metric(ok).await, 1.0);
    let loaded_at = h.metric(at).await;
    assert!(loaded_at > 1.7e9, "{loaded_at}");

    // Revoking alice, with a typo elsewhere: the file is refused whole,
    // alice keeps working, and the metrics say so.
    let typo =
        config_yaml(&mock.url(), &[&bob]).replace("upstreams: [openai]", "upstreams: [opneai]");
    replace_file(&h.config, &typo);
    h.eventually(Duration::from_secs(5), || async {
        h.metric(ok).await == 0.0
    })
    .await;
    assert_eq!(chat(&h, &alice).await, 200);
    assert_eq!(h.metric(at).await, loaded_at);
    assert_eq!(h.admin("/readyz").await.status, 200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    replace_file(&h.config, &config_yaml(&mock.url(), &[&bob]));
    h.eventually(Duration::from_secs(5), || async {
        h.metric(ok).await == 1.0
    })
    .await;
    assert_eq!(chat(&h, &alice).await, 401);
    assert!(h.metric(at).await > loaded_at);
    h.proxy.shutdown().await;
    mock.shutdown().await;
}
