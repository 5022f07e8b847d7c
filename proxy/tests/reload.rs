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
        poll_interval: Duration::from_millis(100),
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
