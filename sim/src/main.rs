//! `lanspread-sim`: the party simulator (see the library's documentation).

#[cfg(target_os = "linux")]
mod cli {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::{Parser, Subcommand};
    use lanspread_sim::{Shape, PEER_BIN_ENV};

    /// Real `lanspread-peer` processes in network namespaces on one bridge,
    /// links shaped by tc: chatter, convergence, rush and churn. As root.
    #[derive(Debug, Parser)]
    #[command(name = "lanspread-sim", version, about)]
    pub struct Cli {
        /// The `lanspread-peer` binary [default: next to this one].
        #[arg(long, global = true, env = PEER_BIN_ENV)]
        peer_bin: Option<PathBuf>,
        /// Delay each link adds to what its peer sends (a tc time; needs the
        /// kernel's netem, else links get tbf and no delay).
        #[arg(long, global = true, default_value = "0.2ms")]
        delay: String,
        /// Longest wait for every peer to see every other (seconds).
        #[arg(long, global = true, default_value_t = 120)]
        warmup: u64,
        #[command(subcommand)]
        scenario: Scenario,
    }

    #[derive(Debug, Subcommand)]
    pub enum Scenario {
        /// Idle peers without games: traffic, CPU, memory and peers per peer.
        Idle {
            /// Party sizes, one table row each.
            #[arg(long, value_delimiter = ',', default_value = "25,50,100")]
            peers: Vec<usize>,
            /// Upload rate of every link (a tc rate).
            #[arg(long, default_value = "1gbit")]
            rate: String,
            /// Wait after warm-up before measuring (seconds): the start-up
            /// (first dials, mDNS queries backing off) is not idle.
            #[arg(long, default_value_t = 30)]
            settle: u64,
            /// Measuring window after warm-up and settling (seconds).
            #[arg(long, default_value_t = 30)]
            window: u64,
        },
        /// A game added, a peer killed, a peer stopped: until everyone knows.
        Convergence {
            #[arg(long, default_value_t = 25)]
            peers: usize,
            #[arg(long, default_value = "1gbit")]
            rate: String,
            /// Longest wait for each change (seconds).
            #[arg(long, default_value_t = 60)]
            bound: u64,
        },
        /// One seed, N−1 running downloaders starting together on a game that appears on the seed, over shaped links.
        Rush(RushArgs),
        /// The rush with the seed and some downloaders killed and restarted.
        Churn(RushArgs),
        /// A lineup of 3 games set on the organizer, every attendee keeping
        /// ready: until the organizer's board shows everyone ready.
        Lineup {
            #[arg(long, default_value_t = 8)]
            peers: usize,
            /// F: each game's size in MiB.
            #[arg(long, default_value_t = 16)]
            size_mib: u64,
            /// R: every link's upload rate (a tc rate).
            #[arg(long, default_value = "100mbit")]
            rate: String,
            /// Bound on the wait for everyone ready in seconds [default: 60 + 2·(N−1)·3F/R].
            #[arg(long)]
            timeout: Option<u64>,
        },
    }

    #[derive(Debug, clap::Args)]
    pub struct RushArgs {
        #[arg(long, default_value_t = 8)]
        peers: usize,
        /// F: the game's size in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// How many files the game is.
        #[arg(long, default_value_t = 4)]
        files: usize,
        /// R: every link's upload rate (a tc rate).
        #[arg(long, default_value = "100mbit")]
        rate: String,
        /// Bound on the download phase in seconds [default: 60 + 2·(N−1)·F/R].
        #[arg(long)]
        timeout: Option<u64>,
    }

    impl RushArgs {
        fn config(&self, delay: &str, warmup: Duration) -> lanspread_sim::RushConfig {
            lanspread_sim::RushConfig {
                n: self.peers,
                size: self.size_mib << 20,
                files: self.files,
                shape: Shape {
                    rate: self.rate.clone(),
                    delay: delay.to_owned(),
                },
                timeout: self.timeout.map(Duration::from_secs),
                warmup,
            }
        }
    }

    pub fn run(cli: Cli) -> anyhow::Result<bool> {
        if let Some(why) = lanspread_sim::unavailable() {
            anyhow::bail!("cannot simulate here: {why}");
        }
        lanspread_sim::install_signal_handlers();
        lanspread_sim::lab::clean_leftovers(None);
        let bin = lanspread_sim::find_peer_bin(cli.peer_bin)?;
        eprintln!("peer binary: {}", bin.display());
        let warmup = Duration::from_secs(cli.warmup);
        let shape = |rate: &str| Shape {
            rate: rate.to_owned(),
            delay: cli.delay.clone(),
        };
        match cli.scenario {
            Scenario::Idle {
                peers,
                rate,
                settle,
                window,
            } => {
                let r = lanspread_sim::idle(
                    &bin,
                    &peers,
                    &shape(&rate),
                    warmup,
                    Duration::from_secs(settle),
                    Duration::from_secs(window),
                )?;
                println!("{r}");
                Ok(r.converged())
            }
            Scenario::Convergence { peers, rate, bound } => {
                let r = lanspread_sim::convergence(
                    &bin,
                    peers,
                    &shape(&rate),
                    warmup,
                    Duration::from_secs(bound),
                )?;
                println!("{r}");
                Ok(r.complete())
            }
            Scenario::Rush(args) => {
                let r = lanspread_sim::rush(&bin, &args.config(&cli.delay, warmup), false)?;
                println!("{r}");
                Ok(r.complete())
            }
            Scenario::Churn(args) => {
                let r = lanspread_sim::churn(&bin, &args.config(&cli.delay, warmup))?;
                println!("{r}");
                Ok(r.complete())
            }
            Scenario::Lineup {
                peers,
                size_mib,
                rate,
                timeout,
            } => {
                let config = lanspread_sim::LineupConfig {
                    n: peers,
                    size: size_mib << 20,
                    shape: shape(&rate),
                    timeout: timeout.map(Duration::from_secs),
                };
                let r = lanspread_sim::lineup(&bin, &config, warmup)?;
                println!("{r}");
                Ok(r.complete())
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    match cli::run(cli::Cli::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        // Ran, but not everyone converged or finished: the table says which.
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("lanspread-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("lanspread-sim needs Linux (network namespaces, veth, tc)");
    std::process::ExitCode::from(2)
}
