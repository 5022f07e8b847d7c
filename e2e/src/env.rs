//! The stack's endpoints, read from the `env` file that `e2e/dev/up.sh` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where everything of the running stack is.
#[derive(Clone, Debug)]
pub struct DevEnv {
    /// The dev directory (`target/dev` unless `STRAKE_DEV_DIR` says otherwise).
    pub dir: PathBuf,
    /// The cluster admin's kubeconfig.
    pub kubeconfig: PathBuf,
    pub proxy_url: String,
    pub proxy_admin_url: String,
    /// The second proxy replica (same namespace, same Secrets).
    pub proxy2_url: String,
    pub proxy2_admin_url: String,
    pub operator_admin_url: String,
    /// The proxy's namespace, where the chart is installed.
    pub namespace: String,
    pub release: String,
    pub operator_sa: String,
    pub proxy_sa: String,
    pub mock_url: String,
    /// The "real" keys the mock upstream accepts, per provider.
    pub mock_keys: MockKeys,
    pub cluster_dir: PathBuf,
    /// kubectl and helm.
    pub cluster_bin: PathBuf,
}

#[derive(Clone, Debug)]
pub struct MockKeys {
    pub openai: String,
    pub anthropic: String,
    pub azure: String,
    pub gemini: String,
}

impl DevEnv {
    pub fn load() -> Result<DevEnv> {
        let dir = std::env::var_os("STRAKE_DEV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/dev"));
        let file = dir.join("env");
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {}: start the stack first (make dev-up)",
                file.display()
            )
        })?;
        let vars = parse(&text);
        let get = |key: &str| {
            vars.get(key)
                .cloned()
                .with_context(|| format!("{} has no {key}", file.display()))
        };
        Ok(DevEnv {
            kubeconfig: get("KUBECONFIG")?.into(),
            proxy_url: get("STRAKE_PROXY_URL")?,
            proxy_admin_url: get("STRAKE_PROXY_ADMIN_URL")?,
            proxy2_url: get("STRAKE_PROXY2_URL")?,
            proxy2_admin_url: get("STRAKE_PROXY2_ADMIN_URL")?,
            operator_admin_url: get("STRAKE_OPERATOR_ADMIN_URL")?,
            namespace: get("STRAKE_NAMESPACE")?,
            release: get("STRAKE_RELEASE")?,
            operator_sa: get("STRAKE_OPERATOR_SA")?,
            proxy_sa: get("STRAKE_PROXY_SA")?,
            mock_url: get("MOCK_UPSTREAM_URL")?,
            mock_keys: MockKeys {
                openai: get("MOCK_OPENAI_KEY")?,
                anthropic: get("MOCK_ANTHROPIC_KEY")?,
                azure: get("MOCK_AZURE_KEY")?,
                gemini: get("MOCK_GEMINI_KEY")?,
            },
            cluster_dir: get("STRAKE_CLUSTER_DIR")?.into(),
            cluster_bin: get("STRAKE_CLUSTER_BIN")?.into(),
            dir,
        })
    }
}

/// The workspace root, where `charts/`, `crds/` and `e2e/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ is inside the workspace")
        .to_path_buf()
}

/// Strake's cache: `$STRAKE_CACHE`, else `$XDG_CACHE_HOME/strake` or
/// `~/.cache/strake`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STRAKE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            home.join("strake")
        })
}

/// The Python of the venv with the official SDKs (e2e/deps.sh builds it).
pub fn python() -> Result<PathBuf> {
    let python = cache_dir().join("venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run e2e/deps.sh",
        python.display()
    );
    Ok(python)
}

/// A binary of this workspace, built by `make build`.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join(name);
    anyhow::ensure!(bin.exists(), "{} is missing: run make build", bin.display());
    Ok(bin)
}

/// `export KEY=value` lines; lines that expand variables (PATH) are skipped.
fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("export ").unwrap_or(l))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.contains('$'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_env_file() {
        let vars = super::parse(
            "# comment\nexport KUBECONFIG=/x/admin.kubeconfig\nexport PATH=/bin:$PATH\nA=b=c\n",
        );
        assert_eq!(vars["KUBECONFIG"], "/x/admin.kubeconfig");
        assert_eq!(vars["A"], "b=c");
        assert!(!vars.contains_key("PATH"));
    }
}
