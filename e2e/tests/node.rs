//! The chart's pods on a real kubelet node (`make dev-up NODE=1`): installed
//! with `helm install --wait` from the locally built images, driven through
//! the proxy's Service, and disrupted the way a cluster disrupts them: the
//! leader operator pod deleted, the proxy rolled by `helm upgrade` and a
//! replica deleted under load, the API server stopped for 30 s. These tests
//! reinstall, roll and stop what every other test uses, so run-e2e.sh runs
//! them alone, one at a time (a lock enforces it). Without a node they are
//! skipped: the process-only stack has no pods.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use strake_e2e::stack::{RECONCILE, assert_upstream_saw};
use strake_e2e::{Issued, Stack, eventually};
use tokio::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const OPENAI: &str = "upstreams: [openai]";
/// The proxy's traffic port in its pods.
const PROXY_PORT: u16 = 8080;
/// How long the cluster gets to replace, schedule and start a pod.
const POD_START: Duration = Duration::from_secs(120);

/// The stack, if it has a node, with this binary's lock held for the whole
/// test; `None` (and the test passes as skipped) for the process-only stack.
async fn node_stack() -> Result<Option<(MutexGuard<'static, ()>, Stack)>> {
    let serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    if std::fs::read_to_string(stack.env.dir.join("env"))?.contains("STRAKE_NODE=1") {
        Ok(Some((serial, stack)))
    } else {
        println!("skipped: the stack has no node (make dev-up NODE=1)");
        Ok(None)
    }
}

fn pods(stack: &Stack) -> Api<Pod> {
    Api::namespaced(stack.client.clone(), &stack.env.namespace)
}

fn selector(stack: &Stack, component: &str) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
        stack.env.release
    )
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The component's pods that are ready and not terminating.
async fn ready_pods(stack: &Stack, component: &str) -> Result<Vec<Pod>> {
    let list = pods(stack)
        .list(&ListParams::default().labels(&selector(stack, component)))
        .await?;
    Ok(list.items.into_iter().filter(is_ready).collect())
}

/// Waits until exactly `count` pods of the component are ready (and no other
/// pod of it exists, so a rollout is over).
async fn wait_pods(stack: &Stack, component: &str, count: usize) -> Result<Vec<Pod>> {
    eventually(
        &format!("{count} ready {component} pods and no others"),
        POD_START,
        || async {
            let all = pods(stack)
                .list(&ListParams::default().labels(&selector(stack, component)))
                .await?
                .items;
            let ready: Vec<Pod> = all.iter().filter(|p| is_ready(p)).cloned().collect();
            ensure!(
                ready.len() == count && all.len() == count,
                "{} ready of {}",
                ready.len(),
                all.len()
            );
            Ok(ready)
        },
    )
    .await
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .with_context(|| format!("pod {} has no IP", name(pod)))
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// An OpenAI chat completion sent straight to one proxy replica.
async fn chat_replica(stack: &Stack, ip: &str, issued: &Issued, marker: &str) -> Result<u16> {
    let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("Hello from {marker}")}],
    });
    let url = format!("http://{ip}:{PROXY_PORT}/v1/chat/completions");
    let reply = stack
        .http
        .send(Method::POST, &url, &[("authorization", &auth)], Some(&body))
        .await?;
    Ok(reply.status)
}

/// The holder of the Lease the operator replicas elect a leader with.
async fn lease_holder(stack: &Stack) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(stack.client.clone(), &stack.env.namespace);
    let lease = leases
        .get_opt(&format!("{}-operator", stack.env.release))
        .await?;
    Ok(lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Waits until one of `operators` holds the Lease.
async fn one_of_them_leads(stack: &Stack, operators: &[Pod]) -> Result<()> {
    eventually("one of the operator pods leads", RECONCILE, || async {
        let holder = lease_holder(stack).await?;
        ensure!(
            operators.iter().any(|p| Some(name(p)) == holder),
            "Lease holder {holder:?}"
        );
        Ok(())
    })
    .await
}

/// OpenAI tokens `names` in a fresh namespace, each answered 200 once.
async fn working_tokens<'a>(
    stack: &'a Stack,
    test: &str,
    names: &[&str],
) -> Result<(strake_e2e::TestNs<'a>, Vec<Issued>, String)> {
    let ns = stack.namespace(test).await?;
    ns.default_upstreams().await?;
    let marker = ns.marker(test);
    let mut issued = Vec::new();
    for who in names {
        let token = ns
            .issue(who, &format!("identity: {who}@example.com\n{OPENAI}"))
            .await?;
        stack.chat_until(&token, &marker, 200).await?;
        issued.push(token);
    }
    Ok((ns, issued, marker))
}

/// `kubectl logs -f` of pods about to go away (every container), each into
/// DIR/e2e/pod-NAME.log for the leak scan: followed to the containers' last
/// line, which a `kubectl logs` after the deletion could no longer fetch.
struct FollowedLogs(Vec<tokio::process::Child>);

/// How long a followed pod gets to finish once it was told to go.
const LOGS_END: Duration = Duration::from_secs(90);

impl FollowedLogs {
    fn start<'a>(stack: &Stack, pods: impl IntoIterator<Item = &'a str>) -> Result<FollowedLogs> {
        let mut children = Vec::new();
        for pod in pods {
            let file = stack.env.dir.join("e2e").join(format!("pod-{pod}.log"));
            let file = std::fs::File::create(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            let child = tokio::process::Command::new(stack.env.cluster_bin.join("kubectl"))
                .args([
                    "logs",
                    "-f",
                    "--all-containers",
                    "-n",
                    &stack.env.namespace,
                    pod,
                ])
                .env("KUBECONFIG", &stack.env.kubeconfig)
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .context("starting kubectl logs -f")?;
            children.push(child);
        }
        Ok(FollowedLogs(children))
    }

    /// Waits until every followed log has ended (its pod's containers exited).
    async fn finish(self) -> Result<()> {
        for mut child in self.0 {
            tokio::time::timeout(LOGS_END, child.wait())
                .await
                .context("a followed pod still logs")??;
        }
        Ok(())
    }
}

/// Steady traffic through the proxy's Service: `short` loops of plain
/// requests and `streams` loops of long streams (40 chunks, 100 ms apart),
/// until `stop`. Every failure is kept with what went wrong.
struct Load {
    stop: AtomicBool,
    sent: AtomicUsize,
    streams: AtomicUsize,
    failed: StdMutex<Vec<String>>,
}

impl Load {
    fn new() -> Load {
        Load {
            stop: AtomicBool::new(false),
            sent: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            failed: StdMutex::new(Vec::new()),
        }
    }

    fn fail(&self, what: String) {
        self.failed.lock().unwrap().push(what);
    }

    async fn short(&self, stack: &Stack, issued: &Issued, marker: &str) {
        while !self.stop.load(Ordering::Relaxed) {
            match stack.chat(issued, marker).await {
                Ok(reply) if reply.status == 200 => {}
                Ok(reply) => self.fail(format!("{}: {}", reply.status, reply.body)),
                Err(e) => self.fail(format!("{e:#}")),
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stream(&self, stack: &Stack, issued: &Issued, marker: &str) {
        while !self.stop.load(Ordering::Relaxed) {
            let outcome = async {
                let url = format!("{}/chat/completions", issued.env("OPENAI_BASE_URL")?);
                let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
                let body = json!({
                    "model": "gpt-4o-mini", "stream": true,
                    "messages": [{"role": "user", "content": format!("Stream for {marker}")}],
                });
                let headers = [
                    ("authorization", auth.as_str()),
                    ("x-mock-chunks", "40"),
                    ("x-mock-interval-ms", "100"),
                ];
                let reply = stack
                    .http
                    .send(Method::POST, &url, &headers, Some(&body))
                    .await?;
                ensure!(
                    reply.status == 200 && reply.body.contains("data: [DONE]"),
                    "stream ended early: {}: {} bytes",
                    reply.status,
                    reply.body.len()
                );
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = outcome {
                self.fail(format!("stream: {e:#}"));
            }
            self.streams.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `short` + `streams` loops beside `during`, then stops them.
    async fn around<T>(
        &self,
        stack: &Stack,
        issued: &Issued,
        marker: &str,
        during: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let traffic = async {
            let mut loops: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
            for _ in 0..4 {
                loops.push(Box::pin(self.short(stack, issued, marker)));
            }
            for _ in 0..2 {
                loops.push(Box::pin(self.stream(stack, issued, marker)));
            }
            futures_join(loops).await;
        };
        let during = async {
            let out = during.await;
            self.stop.store(true, Ordering::Relaxed);
            out
        };
        let ((), out) = tokio::join!(traffic, during);
        out
    }

    fn report(&self, what: &str) -> Result<()> {
        let failed = self.failed.lock().unwrap();
        let sent = self.sent.load(Ordering::Relaxed);
        let streams = self.streams.load(Ordering::Relaxed);
        println!(
            "{what}: {sent} requests and {streams} long streams through the Service, {} failed",
            failed.len()
        );
        ensure!(sent > 50, "{what}: only {sent} requests were sent");
        ensure!(streams > 2, "{what}: only {streams} streams were sent");
        ensure!(
            failed.is_empty(),
            "{what}: {} requests failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        Ok(())
    }
}

/// Polls every future to completion, concurrently, on this task.
async fn futures_join(loops: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + '_>>>) {
    let mut loops = loops;
    std::future::poll_fn(|cx| {
        loops.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if loops.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// The release's values, as `helm get values` prints them.
async fn release_values(stack: &Stack) -> Result<String> {
    let out = stack
        .helm(&[
            "get",
            "values",
            &stack.env.release,
            "-n",
            &stack.env.namespace,
            "-o",
            "yaml",
        ])
        .await?;
    ensure!(out.ok, "helm get values: {}", out.stderr);
    Ok(out.stdout)
}

/// `helm VERB... --wait` (`install`, or `upgrade --install`) of the chart
/// with the release's values (and `strings`, each a `--set-string` flag).
async fn helm_release(stack: &Stack, verb: &[&str], values: &str, strings: &[&str]) -> Result<()> {
    let file = stack.env.dir.join("e2e").join("release-values.yaml");
    std::fs::write(&file, values)?;
    let chart = strake_e2e::env::repo_root().join("charts/strake");
    let (chart, file) = (chart.display().to_string(), file.display().to_string());
    let mut args = verb.to_vec();
    args.extend([
        stack.env.release.as_str(),
        &chart,
        "-n",
        &stack.env.namespace,
        "--wait",
        "--timeout",
        "5m",
        "-f",
        &file,
    ]);
    for set in strings {
        args.extend(["--set-string", set]);
    }
    let out = stack.helm(&args).await?;
    ensure!(out.ok, "helm {}: {}", verb.join(" "), out.stderr);
    Ok(())
}

#[tokio::test]
async fn helm_install_serves_the_whole_story_through_the_service() -> Result<()> {
    let Some((_serial, stack)) = node_stack().await? else {
        return Ok(());
    };
    // From scratch: the release up.sh installed is removed and installed
    // again, as the chart README's install section does it.
    let values = release_values(&stack).await?;
    let going: Vec<String> = pods(&stack)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(name)
        .collect();
    let logs = FollowedLogs::start(&stack, going.iter().map(String::as_str))?;
    let out = stack
        .helm(&[
            "uninstall",
            &stack.env.release,
            "-n",
            &stack.env.namespace,
            "--wait",
        ])
        .await?;
    ensure!(out.ok, "helm uninstall: {}", out.stderr);
    logs.finish().await?;
    let began = Instant::now();
    helm_release(&stack, &["install"], &values, &[]).await?;
    println!(
        "node: helm install --wait took {} ms",
        began.elapsed().as_millis()
    );
    let operators = wait_pods(&stack, "operator", 2).await?;
    let proxies = wait_pods(&stack, "proxy", 2).await?;
    one_of_them_leads(&stack, &operators).await?;

    // The story, through the Service, with what the Secret hands its holder.
    let ns = stack.namespace("node-story").await?;
    ns.default_upstreams().await?;
    let alice = ns
        .issue(
            "alice",
            "identity: alice@example.com\nupstreams: [openai, anthropic]",
        )
        .await?;
    let marker = ns.marker("story");
    ensure!(
        alice.env("OPENAI_BASE_URL")? == format!("{}/v1", stack.env.proxy_url),
        "OPENAI_BASE_URL is {}",
        alice.env("OPENAI_BASE_URL")?
    );
    stack.chat_until(&alice, &marker, 200).await?;
    assert_upstream_saw(
        &stack.upstream_requests(&marker).await?,
        "authorization",
        &format!("Bearer {}", stack.env.mock_keys.openai),
        &alice.token,
    )?;
    let message_marker = ns.marker("story-message");
    let reply = stack.message(&alice, &message_marker).await?;
    ensure!(reply.status == 200, "Anthropic message: {reply:?}");
    assert_upstream_saw(
        &stack.upstream_requests(&message_marker).await?,
        "x-api-key",
        &stack.env.mock_keys.anthropic,
        &alice.token,
    )?;

    ns.patch_token("alice", r#"{"spec":{"suspended":true}}"#)
        .await?;
    stack.chat_until(&alice, &marker, 403).await?;
    ns.patch_token("alice", r#"{"spec":{"suspended":false}}"#)
        .await?;
    stack.chat_until(&alice, &marker, 200).await?;

    ns.patch_token("alice", r#"{"spec":{"rotation":1}}"#)
        .await?;
    let rotated = ns.reissued(&alice).await?;
    stack.chat_until(&rotated, &marker, 200).await?;
    stack.chat_until(&alice, &marker, 401).await?;

    // Revocation reaches every replica within a second.
    let ips: Vec<String> = proxies.iter().map(pod_ip).collect::<Result<_>>()?;
    for ip in &ips {
        let status = chat_replica(&stack, ip, &rotated, &marker).await?;
        ensure!(
            status == 200,
            "replica {ip} before the revocation: {status}"
        );
    }
    let start = Instant::now();
    let revoke = ns.delete_token("alice");
    let probe = async {
        let mut pending: BTreeMap<&str, Option<Duration>> =
            ips.iter().map(|ip| (ip.as_str(), None)).collect();
        while pending.values().any(Option::is_none) {
            ensure!(
                start.elapsed() < Duration::from_secs(1),
                "still accepted 1 s after kubectl delete: {pending:?}"
            );
            for (ip, seen) in pending.iter_mut().filter(|(_, s)| s.is_none()) {
                match chat_replica(&stack, ip, &rotated, &marker).await? {
                    401 => *seen = Some(start.elapsed()),
                    200 => {}
                    other => bail!("replica {ip} while revoking: {other}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(pending)
    };
    let (revoked, seen) = tokio::join!(revoke, probe);
    revoked?;
    for (ip, latency) in seen? {
        println!(
            "node: revocation reached replica {ip} in {} ms",
            latency.unwrap_or_default().as_millis()
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_runtime_enforces_the_pods_security_context() -> Result<()> {
    let Some((_serial, stack)) = node_stack().await? else {
        return Ok(());
    };
    let sock = stack
        .env
        .cluster_dir
        .join("node/containerd/containerd.sock");
    let sock = sock.display().to_string();
    let mut checked = 0;
    for component in ["operator", "proxy"] {
        for pod in ready_pods(&stack, component).await? {
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for container in statuses {
                let id = container
                    .container_id
                    .as_deref()
                    .and_then(|id| id.strip_prefix("containerd://"))
                    .context("no containerd ID")?
                    .to_string();
                // The container's main process as the node's kernel sees it.
                let out = stack
                    .run(
                        std::path::Path::new("ctr"),
                        &["--address", &sock, "-n", "k8s.io", "tasks", "ls"],
                        None,
                    )
                    .await?;
                let pid = out
                    .stdout
                    .lines()
                    .find(|l| l.starts_with(&id))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .with_context(|| format!("no task for {id}"))?
                    .to_string();
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                let field = |key: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_default()
                };
                let who = format!("{}/{}", name(&pod), container.name);
                ensure!(
                    field("Uid:") == "65532 65532 65532 65532",
                    "{who}: Uid {}",
                    field("Uid:")
                );
                ensure!(
                    field("Gid:") == "65532 65532 65532 65532",
                    "{who}: Gid {}",
                    field("Gid:")
                );
                for caps in ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                    ensure!(
                        field(caps) == "0000000000000000",
                        "{who}: {caps} {}",
                        field(caps)
                    );
                }
                ensure!(
                    field("NoNewPrivs:") == "1",
                    "{who}: privileges can escalate"
                );
                ensure!(field("Seccomp:") == "2", "{who}: no seccomp filter");
                // The root filesystem is mounted read-only.
                let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
                let root = mounts
                    .lines()
                    .find(|l| l.split_whitespace().nth(4) == Some("/"))
                    .with_context(|| format!("{who}: no root mount"))?;
                let options = root.split_whitespace().nth(5).unwrap_or_default();
                ensure!(
                    options.split(',').any(|o| o == "ro"),
                    "{who}: root mounted {options}"
                );
                checked += 1;
            }
        }
    }
    ensure!(checked == 4, "checked {checked} containers, expected 4");

    // kubectl exec and logs reach the containers through the kubelet.
    let proxy = name(&ready_pods(&stack, "proxy").await?[0]);
    let version = stack
        .kubectl_ok(
            &[
                "exec",
                "-n",
                &stack.env.namespace,
                &proxy,
                "--",
                "/strake-proxy",
                "--version",
            ],
            None,
        )
        .await?;
    ensure!(
        version.starts_with("strake-proxy"),
        "exec printed {version:?}"
    );
    let logs = stack
        .kubectl_ok(&["logs", "-n", &stack.env.namespace, &proxy], None)
        .await?;
    ensure!(!logs.is_empty(), "kubectl logs printed nothing");
    println!(
        "node: {checked} containers run as 65532 with no capabilities, no new privileges, seccomp and a read-only root"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_the_leader_pod_hands_over_and_a_revocation_lands() -> Result<()> {
    let Some((_serial, stack)) = node_stack().await? else {
        return Ok(());
    };
    wait_pods(&stack, "operator", 2).await?;
    let (ns, tokens, marker) = working_tokens(&stack, "node-failover", &["gone"]).await?;
    let gone = &tokens[0];
    let leader = lease_holder(&stack).await?.context("nobody leads")?;
    let logs = FollowedLogs::start(&stack, [leader.as_str()])?;

    // The leader pod goes (SIGTERM, as in a drain or rollout) and the
    // revocation is made at the same moment.
    let start = Instant::now();
    stack
        .kubectl_ok(
            &[
                "delete",
                "pod",
                "-n",
                &stack.env.namespace,
                &leader,
                "--wait=false",
            ],
            None,
        )
        .await?;
    let revoked = stack.time_to_401(gone, &marker, RECONCILE, ns.delete_token("gone"));
    let handover = eventually("another operator pod leads", RECONCILE, || async {
        let holder = lease_holder(&stack).await?;
        ensure!(
            holder.as_ref().is_some_and(|h| *h != leader),
            "holder {holder:?}"
        );
        Ok(start.elapsed())
    });
    let (revoked, handover) = tokio::join!(revoked, handover);
    let (revoked, handover) = (revoked?, handover?);
    println!(
        "node: leader pod deleted: the other replica led after {} ms; the revocation made at the same moment reached the proxy after {} ms",
        handover.as_millis(),
        revoked.as_millis()
    );
    logs.finish().await?;
    wait_pods(&stack, "operator", 2).await?;
    Ok(())
}

#[tokio::test]
async fn a_rollout_and_a_deleted_proxy_pod_fail_no_request() -> Result<()> {
    let Some((_serial, stack)) = node_stack().await? else {
        return Ok(());
    };
    let before = wait_pods(&stack, "proxy", 2).await?;
    let (_ns, tokens, marker) = working_tokens(&stack, "node-rollout", &["steady"]).await?;
    let steady = &tokens[0];
    let values = release_values(&stack).await?;

    // helm upgrade that changes the pod template: every proxy pod is replaced.
    let going: Vec<String> = before.iter().map(name).collect();
    let logs = FollowedLogs::start(&stack, going.iter().map(String::as_str))?;
    let load = Load::new();
    let stamp = format!(
        "proxy.podAnnotations.strake\\.sh/rollout={}",
        jiff::Timestamp::now().as_second()
    );
    load.around(&stack, steady, &marker, async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        helm_release(&stack, &["upgrade", "--install"], &values, &[&stamp]).await?;
        let after = wait_pods(&stack, "proxy", 2).await?;
        ensure!(
            after
                .iter()
                .all(|p| before.iter().all(|b| name(b) != name(p))),
            "the upgrade did not replace the proxy pods"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    })
    .await?;
    load.report("node: helm upgrade rolling the proxy")?;
    logs.finish().await?;

    // kubectl delete pod of one replica.
    let victim = name(&wait_pods(&stack, "proxy", 2).await?[0]);
    let logs = FollowedLogs::start(&stack, [victim.as_str()])?;
    let load = Load::new();
    load.around(&stack, steady, &marker, async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stack
            .kubectl_ok(
                &["delete", "pod", "-n", &stack.env.namespace, &victim],
                None,
            )
            .await?;
        wait_pods(&stack, "proxy", 2).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    })
    .await?;
    load.report("node: kubectl delete pod of a proxy replica")?;
    logs.finish().await
}

#[tokio::test]
async fn a_30s_apiserver_outage_fails_no_request_and_restarts_no_pod() -> Result<()> {
    let Some((_serial, stack)) = node_stack().await? else {
        return Ok(());
    };
    let operators = wait_pods(&stack, "operator", 2).await?;
    let proxies = wait_pods(&stack, "proxy", 2).await?;
    let restarts_before: BTreeMap<String, i32> = operators
        .iter()
        .chain(&proxies)
        .map(|p| (name(p), restarts(p)))
        .collect();
    let (ns, tokens, marker) = working_tokens(&stack, "node-outage", &["steady", "later"]).await?;
    let [steady, later] = &tokens[..] else {
        bail!("two tokens were issued");
    };

    let load = Load::new();
    let down = load
        .around(&stack, steady, &marker, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let down = Instant::now();
            let stopped = async {
                stack.apiserver("stop").await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                anyhow::Ok(())
            }
            .await;
            // Started again whatever happened, for the tests after this one.
            stack.apiserver("start").await?;
            stopped?;
            let down = down.elapsed();
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(down)
        })
        .await?;
    println!("node: API server down for {} ms", down.as_millis());
    load.report("node: 30 s API server outage")?;

    // The operator replicas stayed (a lost Lease means campaigning again, not
    // exiting), and one of them leads again.
    one_of_them_leads(&stack, &operators).await?;
    let revoked = stack
        .time_to_401(later, &marker, RECONCILE, ns.delete_token("later"))
        .await?;
    println!(
        "node: revocation right after the outage took {} ms",
        revoked.as_millis()
    );
    for pod in ready_pods(&stack, "operator")
        .await?
        .iter()
        .chain(&ready_pods(&stack, "proxy").await?)
    {
        let before = restarts_before.get(&name(pod)).copied();
        ensure!(
            before == Some(restarts(pod)),
            "{}: restarts {before:?} before the outage, {} after",
            name(pod),
            restarts(pod)
        );
    }
    Ok(())
}
