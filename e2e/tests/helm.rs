//! The Helm chart: it lints, `helm install` created what it should, and its
//! RBAC is minimal. (That the RBAC is sufficient is shown by every other
//! test: the operator and the proxy run as the chart's ServiceAccounts.)

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams};
use strake_e2e::Stack;

#[tokio::test]
async fn chart_lints() -> Result<()> {
    let stack = Stack::connect().await?;
    let out = stack
        .helm(&[
            "lint",
            "charts/strake",
            "--strict",
            "--set",
            "endpoint=https://llm.example.com",
        ])
        .await?;
    ensure!(out.ok, "helm lint:\n{}{}", out.stdout, out.stderr);
    Ok(())
}

#[tokio::test]
async fn helm_install_created_the_components() -> Result<()> {
    let stack = Stack::connect().await?;
    let env = &stack.env;
    let status = stack
        .helm(&["status", &env.release, "-n", &env.namespace, "-o", "json"])
        .await?;
    ensure!(status.ok, "helm status: {}", status.stderr);
    let status: serde_json::Value = serde_json::from_str(&status.stdout)?;
    ensure!(
        status["info"]["status"] == "deployed",
        "release {}",
        status["info"]["status"]
    );

    let ns = env.namespace.as_str();
    let client = || stack.client.clone();
    for component in ["operator", "proxy"] {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            env.release
        ));
        let count = |n: usize, kind: &str| {
            ensure!(n >= 1, "the chart created no {kind} for the {component}");
            Ok(())
        };
        count(
            Api::<ServiceAccount>::namespaced(client(), ns)
                .list(&lp)
                .await?
                .items
                .len(),
            "ServiceAccount",
        )?;
        count(
            Api::<Deployment>::namespaced(client(), ns)
                .list(&lp)
                .await?
                .items
                .len(),
            "Deployment",
        )?;
        count(
            Api::<Role>::namespaced(client(), ns)
                .list(&lp)
                .await?
                .items
                .len()
                + Api::<ClusterRole>::all(client())
                    .list(&lp)
                    .await?
                    .items
                    .len(),
            "Role or ClusterRole",
        )?;
        count(
            Api::<RoleBinding>::namespaced(client(), ns)
                .list(&lp)
                .await?
                .items
                .len()
                + Api::<ClusterRoleBinding>::all(client())
                    .list(&lp)
                    .await?
                    .items
                    .len(),
            "binding",
        )?;
        let deployments = Api::<Deployment>::namespaced(client(), ns)
            .list(&lp)
            .await?;
        for d in deployments {
            let pod = d.spec.template.spec.unwrap_or_default();
            let sa = pod.service_account_name.unwrap_or_default();
            let expected = if component == "operator" {
                &env.operator_sa
            } else {
                &env.proxy_sa
            };
            ensure!(
                &sa == expected,
                "{component} Deployment runs as {sa:?}, not {expected}"
            );
            for c in pod.containers {
                let sc = c.security_context.unwrap_or_default();
                ensure!(
                    sc.read_only_root_filesystem == Some(true),
                    "{}: root filesystem is writable",
                    c.name
                );
                ensure!(
                    sc.allow_privilege_escalation == Some(false),
                    "{}: may escalate",
                    c.name
                );
            }
        }
    }
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=proxy",
        env.release
    ));
    let services = Api::<Service>::namespaced(client(), ns).list(&lp).await?;
    ensure!(
        !services.items.is_empty(),
        "the chart created no Service for the proxy"
    );
    // The admin port (/usage, /metrics) is on its own ClusterIP Service,
    // never on the traffic Service, whatever type that one has.
    let (admin, traffic): (Vec<_>, Vec<_>) = services.items.iter().partition(|s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("strake.sh/service"))
            .is_some_and(|v| v == "admin")
    });
    let ports = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.ports.clone())
            .unwrap_or_default()
    };
    let type_of = |s: &Service| s.spec.as_ref().and_then(|spec| spec.type_.clone());
    ensure!(
        admin.len() == 1 && type_of(admin[0]).as_deref() == Some("ClusterIP"),
        "expected one ClusterIP admin Service for the proxy, found {}",
        admin.len()
    );
    ensure!(!traffic.is_empty(), "no traffic Service for the proxy");
    for s in traffic {
        let exposed: Vec<_> = ports(s)
            .into_iter()
            .filter(|p| {
                p.target_port
                    != Some(
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                            "http".into(),
                        ),
                    )
            })
            .map(|p| p.name.unwrap_or_default())
            .collect();
        ensure!(
            exposed.is_empty(),
            "the traffic Service {:?} exposes more than the API port: {exposed:?}",
            s.metadata.name
        );
    }
    // The operator's ClusterRole is bound to its ServiceAccount.
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=operator",
        env.release
    ));
    let bound = Api::<ClusterRoleBinding>::all(client())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .any(|b| {
            b.subjects
                .unwrap_or_default()
                .iter()
                .any(|s| s.kind == "ServiceAccount" && s.name == env.operator_sa)
        });
    ensure!(bound, "no ClusterRoleBinding for {}", env.operator_sa);
    Ok(())
}

#[tokio::test]
async fn rbac_is_minimal() -> Result<()> {
    let stack = Stack::connect().await?;
    let env = &stack.env;
    let ns = env.namespace.as_str();
    let proxy = format!("system:serviceaccount:{ns}:{}", env.proxy_sa);
    let operator = format!("system:serviceaccount:{ns}:{}", env.operator_sa);
    // (who, verb, resource[/subresource], namespace or "" for cluster scope /
    // all namespaces, allowed)
    let checks: &[(&str, &str, &str, &str, bool)] = &[
        (&proxy, "list", "secrets", ns, true),
        (&proxy, "watch", "secrets", ns, true),
        (&proxy, "get", "secrets", ns, true),
        (&proxy, "list", "secrets", "default", false),
        (&proxy, "list", "secrets", "", false),
        (&proxy, "create", "secrets", ns, false),
        (&proxy, "update", "secrets", ns, false),
        (&proxy, "patch", "secrets", ns, false),
        (&proxy, "delete", "secrets", ns, false),
        (&proxy, "get", "configmaps", ns, false),
        // The replica count that shares each token's rate limits.
        (&proxy, "watch", "endpointslices.discovery.k8s.io", ns, true),
        (&proxy, "list", "endpointslices.discovery.k8s.io", "", false),
        (
            &proxy,
            "create",
            "endpointslices.discovery.k8s.io",
            ns,
            false,
        ),
        (
            &proxy,
            "patch",
            "endpointslices.discovery.k8s.io",
            ns,
            false,
        ),
        (&proxy, "list", "straketokens.strake.sh", ns, false),
        // Its caller's own StrakeToken, for the usage /strake/v1/me shows.
        (&proxy, "get", "straketokens.strake.sh", "team-x", true),
        (&proxy, "list", "straketokens.strake.sh", "team-x", false),
        (
            &proxy,
            "patch",
            "straketokens.strake.sh/status",
            "team-x",
            false,
        ),
        (&proxy, "watch", "straketokens.strake.sh", "", false),
        (&proxy, "update", "straketokens.strake.sh", "team-x", false),
        (&operator, "create", "secrets", "team-x", true),
        (
            &operator,
            "patch",
            "straketokens.strake.sh/status",
            "team-x",
            true,
        ),
        (&operator, "update", "leases.coordination.k8s.io", ns, true),
        (&operator, "delete", "namespaces", "", false),
        (
            &operator,
            "create",
            "straketokens.strake.sh",
            "team-x",
            false,
        ),
        (
            &operator,
            "delete",
            "straketokens.strake.sh",
            "team-x",
            false,
        ),
        (
            &operator,
            "create",
            "clusterroles.rbac.authorization.k8s.io",
            "",
            false,
        ),
        (&operator, "create", "pods", "team-x", false),
        (&operator, "get", "configmaps", "team-x", false),
        (
            &operator,
            "update",
            "leases.coordination.k8s.io",
            "default",
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for &(who, verb, resource, namespace, allowed) in checks {
        // `can-i VERB RESOURCE/NAME` would name an object: a subresource
        // is its own flag.
        let (kind, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let mut args = vec!["auth", "can-i", verb, kind, "--as", who];
        if !subresource.is_empty() {
            args.extend(["--subresource", subresource]);
        }
        if namespace.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", namespace]);
        }
        let out = stack.kubectl(&args, None).await?;
        let answer = out.stdout.trim();
        ensure!(
            answer == "yes" || answer == "no",
            "kubectl {}: {}",
            args.join(" "),
            out.stderr
        );
        if (answer == "yes") != allowed {
            wrong.push(format!(
                "{who} {verb} {resource} in {namespace:?}: {answer}"
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "RBAC is not as it should be:\n{}",
        wrong.join("\n")
    );
    Ok(())
}
