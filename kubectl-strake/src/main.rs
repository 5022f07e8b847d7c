//! `kubectl strake`: the everyday StrakeToken commands. kubectl finds it
//! on PATH as `kubectl-strake`. It reads the kubeconfig as kubectl does
//! (`KUBECONFIG`, `--kubeconfig`, `--context`, the context's namespace),
//! and does only what `kubectl apply/patch/delete` could: the same RBAC
//! applies.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod core;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use strake_crds::StrakeToken;

use crate::core::{EnvFormat, IssueRequest, Readiness};

/// How often a wait re-reads the token.
const POLL: Duration = Duration::from_millis(250);

#[derive(Parser)]
#[command(
    name = "kubectl strake",
    version,
    about = "Issue, list, suspend, rotate and revoke StrakeTokens, and print a holder's env"
)]
struct Cli {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a StrakeToken, wait until it is Ready, print the holder's env.
    Issue(IssueArgs),
    /// Print a token's env from its Secret.
    Env {
        name: String,
        #[arg(long, value_enum, default_value = "dotenv")]
        format: EnvFormat,
    },
    /// List tokens: identity, phase, expiry, last use, usage.
    #[command(alias = "list")]
    Ls {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
    /// Refuse the token without deleting it.
    Suspend { name: String },
    /// Accept a suspended token again.
    Resume { name: String },
    /// Mint a new token; the old one stops working now, or after --grace.
    Rotate {
        name: String,
        /// How long the current token keeps working beside the new one (e.g. 1h, at most 7d); sets spec.rotationGracePeriod
        #[arg(long, value_parser = duration)]
        grace: Option<Duration>,
        /// How long to wait for the new token.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// Delete the token: the proxy refuses it within seconds.
    Revoke {
        name: String,
        /// Return at once instead of waiting until the token is gone.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a token's spec, state, env keys and recent events.
    Describe {
        name: String,
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
}

#[derive(Args)]
struct IssueArgs {
    name: String,
    /// Who holds it, e.g. alice@example.com or ci/payments.
    #[arg(long)]
    identity: String,
    /// UpstreamKeys it may use (repeat, or separate with commas).
    #[arg(long = "upstream", required = true, value_delimiter = ',')]
    upstreams: Vec<String>,
    /// When it stops working: a duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long)]
    expires: Option<String>,
    /// Model globs it may call (repeat, or separate with commas), e.g. 'gpt-4o*'.
    #[arg(long = "models", value_delimiter = ',')]
    models: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u32>,
    /// The holder's Secret (default: NAME-strake).
    #[arg(long)]
    secret_name: Option<String>,
    /// A spending cap per calendar period (UTC): 50usd/month,
    /// 2000000tokens/day, or both, 50usd+2000000tokens/week.
    #[arg(long)]
    budget: Option<String>,
    #[arg(long, value_enum, default_value = "dotenv")]
    format: EnvFormat,
    /// How long to wait until it is Ready.
    #[arg(long, default_value = "60s", value_parser = duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    strake_crds::duration::parse(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Kube {
    client: kube::Client,
    namespace: String,
}

impl Kube {
    async fn connect(cli: &Cli) -> Result<Kube> {
        let options = KubeConfigOptions {
            context: cli.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &cli.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer().await?,
        };
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Kube {
            client: kube::Client::try_from(config)?,
            namespace,
        })
    }

    fn tokens(&self) -> Api<StrakeToken> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn token(&self, name: &str) -> Result<StrakeToken> {
        self.tokens().get(name).await.map_err(|e| match e {
            kube::Error::Api(s) if s.is_not_found() => {
                anyhow::anyhow!("no StrakeToken {name:?} in namespace {:?}", self.namespace)
            }
            e => anyhow::Error::new(e).context(format!("reading StrakeToken {name}")),
        })
    }

    /// Waits until `done` holds for the token, or fails with the
    /// operator's reason.
    async fn wait(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&StrakeToken) -> bool,
    ) -> Result<StrakeToken> {
        let start = Instant::now();
        loop {
            let token = self.token(name).await?;
            let state = core::readiness(&token);
            match state {
                Readiness::Ready if done(&token) => return Ok(token),
                Readiness::Failed(why) => bail!("StrakeToken {name} failed: {why}"),
                Readiness::Waiting(why) if start.elapsed() >= timeout => {
                    bail!("StrakeToken {name} is not Ready after {timeout:?}: {why}")
                }
                _ if start.elapsed() >= timeout => {
                    bail!("StrakeToken {name} did not change within {timeout:?}")
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The holder's Secret: (token, every key).
    async fn secret(&self, token: &StrakeToken) -> Result<(String, BTreeMap<String, String>)> {
        let name = token
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .unwrap_or_else(|| token.secret_name());
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets
            .get(&name)
            .await
            .with_context(|| format!("reading the token's Secret {name}"))?;
        let data: BTreeMap<String, String> = secret
            .data
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        let plaintext = data
            .get(strake_crds::resources::HOLDER_TOKEN_KEY)
            .cloned()
            .with_context(|| format!("Secret {name} holds no token yet"))?;
        Ok((plaintext, data))
    }

    async fn print_env(&self, token: &StrakeToken, format: EnvFormat) -> Result<()> {
        let (plaintext, data) = self.secret(token).await?;
        let printed = core::render_env(&core::env_vars(&data), &plaintext, format);
        std::io::stderr().write_all(printed.stderr.as_bytes())?;
        std::io::stdout().write_all(printed.stdout.as_bytes())?;
        Ok(())
    }

    async fn patch(&self, name: &str, patch: serde_json::Value) -> Result<StrakeToken> {
        self.token(name).await?;
        self.tokens()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("patching StrakeToken {name}"))
    }
}

async fn run(cli: Cli) -> Result<()> {
    let kube = Kube::connect(&cli).await?;
    match cli.command {
        Command::Issue(args) => {
            let req = IssueRequest {
                name: args.name.clone(),
                identity: args.identity,
                upstreams: args.upstreams,
                expires: args.expires,
                models: args.models,
                requests_per_minute: args.rpm,
                tokens_per_minute: args.tpm,
                secret_name: args.secret_name,
                budget: args.budget,
            };
            let token = core::new_token(&req, Timestamp::now())?;
            kube.tokens()
                .create(&PostParams::default(), &token)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.reason == "AlreadyExists" => anyhow::anyhow!(
                        "StrakeToken {} already exists in namespace {:?}: `kubectl strake env {}` prints its env, `kubectl strake rotate {}` mints a new one",
                        args.name,
                        kube.namespace,
                        args.name,
                        args.name
                    ),
                    kube::Error::Api(s) => anyhow::anyhow!("the API server refused the StrakeToken: {}", s.message),
                    e => anyhow::Error::new(e).context("creating the StrakeToken"),
                })?;
            let ready = kube.wait(&args.name, args.timeout, |_| true).await?;
            eprintln!(
                "StrakeToken {}/{} is Ready; its env:",
                kube.namespace, args.name
            );
            kube.print_env(&ready, args.format).await
        }
        Command::Env { name, format } => {
            let token = kube.token(&name).await?;
            kube.print_env(&token, format).await
        }
        Command::Ls {
            all_namespaces,
            output,
        } => {
            let api: Api<StrakeToken> = if all_namespaces {
                Api::all(kube.client.clone())
            } else {
                kube.tokens()
            };
            let mut tokens = api.list(&ListParams::default()).await?.items;
            tokens.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            match output {
                Some(o) => print_document(&core::list_document(&tokens), o),
                None => {
                    print!("{}", core::table(&tokens, all_namespaces, Timestamp::now()));
                    Ok(())
                }
            }
        }
        Command::Suspend { name } => {
            kube.patch(&name, core::suspend_patch(true)).await?;
            eprintln!("StrakeToken {name} suspended: the proxy refuses it with 403");
            Ok(())
        }
        Command::Resume { name } => {
            kube.patch(&name, core::suspend_patch(false)).await?;
            eprintln!("StrakeToken {name} resumed");
            Ok(())
        }
        Command::Rotate {
            name,
            grace,
            timeout,
        } => {
            let before = kube.token(&name).await?;
            let old_prefix = before.status.as_ref().and_then(|s| s.token_prefix.clone());
            let patched = kube
                .patch(&name, core::rotate_patch(&before, grace))
                .await?;
            let generation = patched.metadata.generation;
            let after = kube
                .wait(&name, timeout, |t| {
                    let status = t.status.as_ref();
                    status.and_then(|s| s.observed_generation) >= generation
                        && status.and_then(|s| s.token_prefix.clone()) != old_prefix
                })
                .await?;
            let status = after.status.clone().unwrap_or_default();
            let previous = match &status.previous_token_valid_until {
                Some(until) => format!("the previous token works until {}", until.0),
                None => "the previous token no longer works".into(),
            };
            eprintln!(
                "StrakeToken {name} rotated: the new token ({}…) is in Secret {}; {previous}; `kubectl strake env {name}` prints it",
                status.token_prefix.unwrap_or_default(),
                after.secret_name()
            );
            Ok(())
        }
        Command::Revoke { name, no_wait } => {
            kube.token(&name).await?;
            kube.tokens()
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting StrakeToken {name}"))?;
            if !no_wait {
                let start = Instant::now();
                while kube.tokens().get_opt(&name).await?.is_some() {
                    if start.elapsed() > Duration::from_secs(60) {
                        bail!(
                            "StrakeToken {name} is still being deleted after 60 s (is the operator running?)"
                        );
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            eprintln!("StrakeToken {name} revoked");
            Ok(())
        }
        Command::Describe { name, output } => {
            let token = kube.token(&name).await?;
            if let Some(o) = output {
                return print_document(&core::list_document(&[token])["items"][0], o);
            }
            let env_keys: Vec<String> = match kube.secret(&token).await {
                Ok((_, data)) => core::env_vars(&data).into_keys().collect(),
                Err(_) => Vec::new(),
            };
            let events: Api<Event> = Api::namespaced(kube.client.clone(), &kube.namespace);
            let selector = format!("involvedObject.kind=StrakeToken,involvedObject.name={name}");
            let mut events = events
                .list(&ListParams::default().fields(&selector))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
            print!(
                "{}",
                core::describe(&token, &env_keys, &events, Timestamp::now())
            );
            Ok(())
        }
    }
}

fn print_document(doc: &serde_json::Value, output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(doc)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(doc)?),
    }
    Ok(())
}
