//! The `portcullis` command line: parse arguments, call into the library, choose the exit code.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::commands::{self, init::KeyType, secrets::HashAlgorithm};
use portcullis::config::LogFormat;

/// mimalloc: a large directory loads in about half the time glibc's malloc takes, and aligned
/// calls only where a layout needs them (see `portcullis::alloc`).
#[global_allocator]
static ALLOCATOR: portcullis::alloc::Mimalloc = portcullis::alloc::Mimalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating gateway in front of a container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log as JSON lines (overrides log.format).
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a configuration and print every problem (exit 1 if there is any).
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also ask the registry whether it trusts the gateway's tokens, and if not, why.
        #[arg(long)]
        upstream: bool,
    },
    /// Create a signing key, its certificate and a starter gateway.yaml.
    Init {
        /// The registry behind the gateway, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        upstream: String,
        /// The address clients use, e.g. https://registry.example.com:4567.
        #[arg(long)]
        public_url: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "ec")]
        key_type: KeyType,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Also write a CA (ca.crt, ca.key) and a TLS certificate for these names and
        /// addresses (tls.crt, tls.key), and enable tls: in gateway.yaml.
        #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
        tls_host: Vec<String>,
    },
    /// Mint a CI job token and print CI_REGISTRY, CI_REGISTRY_USER, CI_REGISTRY_PASSWORD,
    /// CI_JOB_TOKEN and CI_REGISTRY_IMAGE as NAME=value lines (for eval).
    CiToken {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The job's project, e.g. mygroup/myproject.
        #[arg(long)]
        project: String,
        /// The user the job runs for.
        #[arg(long)]
        user: String,
        /// How long the token works, e.g. 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Walk the client side of login and push against any registry, step by step, with fixes.
    Doctor {
        /// The registry address clients use, e.g. https://registry.example.com:4567.
        url: String,
        #[arg(short = 'u', long = "username")]
        username: Option<String>,
        /// Read the password or token from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Also start (and cancel) an upload session in this repository.
        #[arg(long)]
        repository: Option<String>,
        /// A CA certificate (PEM) to trust for the registry and its token endpoint.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
        /// Send the credentials even to a plain-HTTP realm on another origin (refused otherwise).
        #[arg(long)]
        allow_insecure_realm: bool,
    },
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Hash a password read from standard input, for `password_hash`.
    HashPassword {
        #[arg(long, value_enum, default_value = "argon2id")]
        algorithm: HashAlgorithm,
        /// bcrypt cost (4-31).
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random access token and the SHA-256 to store in gateway.yaml.
    Generate {
        #[arg(long, default_value = "pat-")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config, json_logs } => {
            // One thread for accepting, signals, reloads and the ops listener; connections are
            // served on `server.workers` threads of their own (see `server::workers`).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            runtime
                .block_on(commands::serve::serve(
                    &config,
                    json_logs.then_some(LogFormat::Json),
                ))
                .map_err(|e| format!("portcullis: {e}"))
        }
        Command::Check { config, upstream } => match commands::check::check(&config) {
            Ok(report) => {
                print!("{}", report.summary);
                if upstream {
                    let (text, problem) = commands::check::check_upstream(&report);
                    print!("{text}");
                    if let Some(verdict) = problem {
                        return Err(verdict.into());
                    }
                }
                Ok(())
            }
            Err(problems) => {
                let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
                Err(format!(
                    "{}: {} problem(s):\n{}",
                    config.display(),
                    problems.len(),
                    lines.join("\n")
                ))
            }
        },
        Command::Init {
            upstream,
            public_url,
            dir,
            key_type,
            force,
            tls_host,
        } => {
            let options = commands::init::InitOptions {
                dir,
                upstream,
                public_url,
                key_type,
                force,
                tls_hosts: tls_host,
            };
            commands::init::init(&options).map(|text| print!("{text}"))
        }
        Command::CiToken {
            config,
            project,
            user,
            ttl,
        } => {
            let token = commands::ci_token::ci_token(&commands::ci_token::CiTokenOptions {
                config,
                project,
                user,
                ttl,
            })?;
            if let Some(warning) = token.warning {
                eprintln!("{warning}");
            }
            print!("{}", token.variables);
            Ok(())
        }
        Command::Doctor {
            url,
            username,
            password_stdin,
            repository,
            ca_file,
            json,
            allow_insecure_realm,
        } => {
            let password = if password_stdin {
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                Some(input.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            };
            let options = commands::doctor::DoctorOptions {
                url,
                username,
                password,
                repository,
                ca: ca_file,
                allow_insecure_realm,
            };
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let steps = runtime.block_on(commands::doctor::doctor(&options));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&steps).unwrap_or_default()
                );
            } else {
                print!(
                    "{}",
                    commands::doctor::render(
                        &steps,
                        std::io::IsTerminal::is_terminal(&std::io::stdout())
                    )
                );
            }
            if steps.iter().all(|s| s.ok) {
                Ok(())
            } else {
                Err("doctor: a step failed (see above)".into())
            }
        }
        Command::Token {
            command: TokenCommand::Generate { prefix },
        } => {
            let new = commands::secrets::generate_token(&prefix)?;
            println!("token:        {}", new.token);
            println!("token_sha256: {}", new.sha256_hex);
            Ok(())
        }
        Command::HashPassword { algorithm, cost } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            let hash = commands::secrets::hash_password(&input, algorithm, cost)?;
            println!("{hash}");
            Ok(())
        }
    }
}
