//! Run last: no upstream key and no Strake token handled during the run is
//! in any log: the operator's, the proxy's, the mock's, etcd's, the
//! kube-apiserver's, the controller manager's, or the test runs' output.

use anyhow::{Result, ensure};
use strake_e2e::{DevEnv, leaks};

#[test]
fn no_secret_reached_a_log() -> Result<()> {
    let env = DevEnv::load()?;
    let secrets = leaks::secrets(&env)?;
    let files = leaks::log_files(&env)?;
    ensure!(
        !files.is_empty(),
        "no logs found under {}",
        env.dir.display()
    );
    let mut findings = Vec::new();
    let mut bytes = 0;
    for file in &files {
        let text = std::fs::read(file)?;
        bytes += text.len();
        findings.extend(leaks::scan(file, &String::from_utf8_lossy(&text), &secrets));
    }
    let tokens = secrets.iter().filter(|(kind, _)| kind == "token").count();
    println!(
        "searched {} logs ({} MB) for {} secrets ({tokens} tokens issued during the run) and any well-formed token",
        files.len(),
        bytes / 1_000_000,
        secrets.len()
    );
    for f in &findings {
        println!("{}:{}: {}", f.file.display(), f.line, f.what);
    }
    ensure!(
        findings.is_empty(),
        "{} secrets found in logs (listed above)",
        findings.len()
    );
    Ok(())
}
