//! The Windows firewall and network category, for the diagnostics report.
//!
//! Windows drops inbound UDP unless a rule allows it, and treats a network
//! marked Public as hostile (no discovery, stricter rules). The installer
//! adds an inbound rule for the app's UDP port (`src-tauri/windows/hooks.nsh`);
//! this check says when the rule is missing or the network is Public, and
//! how to fix it.
//!
//! The query runs PowerShell's NetSecurity and NetConnection cmdlets and
//! prints one JSON object (language-independent, unlike `netsh` text); the
//! parsing and the verdict are pure ([`parse`], [`hints`]) and tested on
//! every platform. Only [`query`] runs a process, and only on Windows.

use std::path::Path;

use serde::Deserialize;

use crate::events::{FirewallReport, NetworkProfile};

/// The name of the rule the Windows installer adds (and the fix suggests).
pub const RULE_NAME: &str = "lanspread";

/// The PowerShell script [`query`] runs on Windows: `{port}` is replaced by
/// the UDP port. Rules are pre-filtered to UDP port filters naming the
/// port, a range or `Any`; [`parse`] decides the rest.
pub const SCRIPT: &str = r#"
$ErrorActionPreference = 'SilentlyContinue'
[Console]::OutputEncoding = [Text.Encoding]::UTF8
$port = '{port}'
$profiles = @(Get-NetConnectionProfile | ForEach-Object {
  [ordered]@{ name = [string]$_.Name; interface = [string]$_.InterfaceAlias; category = [string]$_.NetworkCategory } })
$firewall = @(Get-NetFirewallProfile | ForEach-Object {
  [ordered]@{ name = [string]$_.Name; enabled = [string]$_.Enabled } })
$rules = @(Get-NetFirewallPortFilter | Where-Object {
    [string]$_.Protocol -eq 'UDP' -and (@($_.LocalPort) | Where-Object { $_ -eq $port -or $_ -eq 'Any' -or $_ -like '*-*' })
  } | Get-NetFirewallRule | Where-Object {
    [string]$_.Enabled -eq 'True' -and [string]$_.Direction -eq 'Inbound' -and [string]$_.Action -eq 'Allow'
  } | ForEach-Object {
    [ordered]@{ name = [string]$_.DisplayName; profile = [string]$_.Profile;
      ports = @(@(($_ | Get-NetFirewallPortFilter).LocalPort) | ForEach-Object { [string]$_ });
      program = [string]($_ | Get-NetFirewallApplicationFilter).Program } })
[ordered]@{ profiles = $profiles; firewall = $firewall; rules = $rules } | ConvertTo-Json -Compress -Depth 4
"#;

#[derive(Debug, Deserialize)]
struct Output {
    #[serde(default)]
    profiles: Vec<ProfileOut>,
    #[serde(default)]
    firewall: Vec<FirewallOut>,
    #[serde(default)]
    rules: Vec<RuleOut>,
}

#[derive(Debug, Deserialize)]
struct ProfileOut {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interface: String,
    #[serde(default)]
    category: String,
}

#[derive(Debug, Deserialize)]
struct FirewallOut {
    name: String,
    enabled: String,
}

#[derive(Debug, Deserialize)]
struct RuleOut {
    name: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    program: String,
}

/// Whether a rule's local ports (`27600`, `27000-28000`, `Any`) cover `port`.
fn ports_cover(ports: &[String], port: u16) -> bool {
    ports.iter().any(|p| {
        let p = p.trim();
        if p.eq_ignore_ascii_case("any") {
            return true;
        }
        match p.split_once('-') {
            Some((low, high)) => match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                (Ok(low), Ok(high)) => (low..=high).contains(&port),
                _ => false,
            },
            None => p.parse() == Ok(port),
        }
    })
}

/// Whether a rule's program (`Any`, a path, possibly with `%VARS%`) is
/// this executable. Compared by file name when the rule's path uses
/// variables; Windows paths are case-insensitive.
fn program_covers(program: &str, exe: Option<&Path>) -> bool {
    let program = program.trim();
    if program.is_empty() || program.eq_ignore_ascii_case("any") {
        return true;
    }
    let Some(exe) = exe else { return false };
    let exe = exe.to_string_lossy();
    if program.contains('%') {
        let name = |p: &str| p.rsplit(['\\', '/']).next().unwrap_or(p).to_lowercase();
        return name(program) == name(&exe);
    }
    program.eq_ignore_ascii_case(&exe)
}

/// Parse the script's output into a report: rules are kept when they
/// allow UDP `port` for `exe` (or for every program).
pub fn parse(json: &str, port: u16, exe: Option<&Path>) -> Result<FirewallReport, String> {
    let output: Output = serde_json::from_str(json.trim())
        .map_err(|e| format!("unexpected output from PowerShell: {e}"))?;
    Ok(FirewallReport {
        networks: output
            .profiles
            .into_iter()
            .map(|p| NetworkProfile {
                name: p.name,
                interface: p.interface,
                category: p.category,
            })
            .collect(),
        enabled_profiles: output
            .firewall
            .into_iter()
            .filter(|f| f.enabled.eq_ignore_ascii_case("true"))
            .map(|f| f.name)
            .collect(),
        rules: output
            .rules
            .into_iter()
            .filter(|r| ports_cover(&r.ports, port) && program_covers(&r.program, exe))
            .map(|r| format!("{} ({})", r.name, r.profile))
            .collect(),
        error: None,
    })
}

/// The firewall profile that governs a network category.
fn profile_of(category: &str) -> &str {
    match category {
        "DomainAuthenticated" => "Domain",
        other => other,
    }
}

/// Whether a rule shown as `name (Private, Domain)` applies to `profile`.
fn rule_applies(rule: &str, profile: &str) -> bool {
    let profiles = rule
        .rsplit_once('(')
        .map(|(_, p)| p.trim_end_matches(')'))
        .unwrap_or("");
    profiles
        .split(',')
        .map(str::trim)
        .any(|p| p.eq_ignore_ascii_case("any") || p.eq_ignore_ascii_case(profile))
}

/// What the player should do, from a report: a Public network, or a
/// network whose firewall profile is on with no rule for our port.
pub fn hints(report: &FirewallReport, port: u16) -> Vec<String> {
    let mut hints = Vec::new();
    if let Some(error) = &report.error {
        hints.push(format!("Could not check the Windows firewall: {error}"));
        return hints;
    }
    for network in &report.networks {
        if network.category == "Public" {
            hints.push(format!(
                "Windows treats the network `{}` ({}) as Public: it blocks discovery and incoming \
                 connections there. At a LAN party make it Private: Settings > Network & Internet \
                 > {} > Private network (or, as administrator, `Set-NetConnectionProfile \
                 -InterfaceAlias '{}' -NetworkCategory Private`).",
                network.name, network.interface, network.interface, network.interface
            ));
        }
    }
    let uncovered: Vec<&str> = report
        .networks
        .iter()
        .map(|n| profile_of(&n.category))
        .filter(|profile| report.enabled_profiles.iter().any(|e| e == profile))
        .filter(|profile| !report.rules.iter().any(|r| rule_applies(r, profile)))
        .collect();
    if !uncovered.is_empty() {
        hints.push(format!(
            "No Windows firewall rule lets other peers reach UDP port {port} on the {} \
             profile: reinstall lanspread, or run as administrator `netsh advfirewall firewall \
             add rule name={RULE_NAME} dir=in action=allow protocol=UDP localport={port} \
             profile=private,domain`.",
            uncovered.join(" and ")
        ));
    }
    hints
}

/// Run the query (Windows only; blocking, a second or two). Gives up after
/// `timeout` or as soon as `cancelled` returns true, killing PowerShell.
#[cfg(windows)]
pub fn query(
    port: u16,
    timeout: std::time::Duration,
    cancelled: impl Fn() -> bool,
) -> FirewallReport {
    use std::io::Read;
    use std::os::windows::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    /// No console window flashes up from the desktop app.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    let failed = |error: String| FirewallReport {
        networks: Vec::new(),
        enabled_profiles: Vec::new(),
        rules: Vec::new(),
        error: Some(error),
    };
    let script = SCRIPT.replace("{port}", &port.to_string());
    let child = Command::new("powershell.exe")
        .args(["-NoProfile", "-NonInteractive", "-Command", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .creation_flags(CREATE_NO_WINDOW)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot run PowerShell: {e}")),
    };
    // The output is small (a few KiB): it fits the pipe, so waiting for the
    // exit before reading cannot deadlock.
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if cancelled() || started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return failed("PowerShell did not answer in time".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return failed(format!("PowerShell: {e}")),
        }
    }
    let mut text = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut text);
    }
    let exe = std::env::current_exe().ok();
    parse(&String::from_utf8_lossy(&text), port, exe.as_deref()).unwrap_or_else(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's output on a laptop on a Public Wi-Fi, firewall on,
    /// with the installer's rule (Private and Domain only), a rule of
    /// another program, and a range rule.
    const PUBLIC_WIFI: &str = r#"{"profiles":[{"name":"PartyNet","interface":"Wi-Fi","category":"Public"}],"firewall":[{"name":"Domain","enabled":"True"},{"name":"Private","enabled":"True"},{"name":"Public","enabled":"True"}],"rules":[{"name":"lanspread","profile":"Domain, Private","ports":["27600"],"program":"Any"},{"name":"Steam","profile":"Any","ports":["27000-27100"],"program":"C:\\Program Files (x86)\\Steam\\steam.exe"},{"name":"Game server","profile":"Public","ports":["27500-27700"],"program":"Any"}]}"#;

    /// Wired, Private, the installer's rule.
    const PRIVATE_WIRED: &str = r#"{"profiles":[{"name":"Network 2","interface":"Ethernet","category":"Private"}],"firewall":[{"name":"Domain","enabled":"True"},{"name":"Private","enabled":"True"},{"name":"Public","enabled":"True"}],"rules":[{"name":"lanspread","profile":"Domain, Private","ports":["27600"],"program":"Any"}]}"#;

    /// Private, no rule at all (PowerShell prints an empty array).
    const NO_RULE: &str = r#"{"profiles":[{"name":"Network","interface":"Ethernet","category":"Private"}],"firewall":[{"name":"Domain","enabled":"True"},{"name":"Private","enabled":"True"},{"name":"Public","enabled":"False"}],"rules":[]}"#;

    #[test]
    fn public_network_is_reported_with_the_fix() {
        let report = parse(PUBLIC_WIFI, 27600, None).unwrap();
        assert_eq!(report.networks[0].category, "Public");
        assert_eq!(report.enabled_profiles, ["Domain", "Private", "Public"]);
        // Steam's rule is for another program and does not cover the port.
        assert_eq!(
            report.rules,
            ["lanspread (Domain, Private)", "Game server (Public)"]
        );
        let hints = hints(&report, 27600);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("Public") && hints[0].contains("Set-NetConnectionProfile"));
    }

    #[test]
    fn a_private_network_with_the_rule_is_fine() {
        let report = parse(PRIVATE_WIRED, 27600, None).unwrap();
        assert_eq!(hints(&report, 27600), Vec::<String>::new());
        // The installer's rule is for 27600 only.
        let other_port = parse(PRIVATE_WIRED, 27601, None).unwrap();
        assert!(other_port.rules.is_empty());
        assert!(hints(&other_port, 27601)[0].contains("localport=27601"));
    }

    #[test]
    fn a_missing_rule_is_reported_with_the_fix() {
        let report = parse(NO_RULE, 27600, None).unwrap();
        let hints = hints(&report, 27600);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("Private profile"));
        assert!(hints[0].contains("netsh advfirewall firewall add rule name=lanspread"));
    }

    #[test]
    fn a_switched_off_profile_needs_no_rule() {
        let json = NO_RULE.replace(
            r#""name":"Private","enabled":"True""#,
            r#""name":"Private","enabled":"False""#,
        );
        let report = parse(&json, 27600, None).unwrap();
        assert_eq!(hints(&report, 27600), Vec::<String>::new());
    }

    #[test]
    fn rules_for_this_program() {
        let exe = Path::new(r"C:\Program Files\lanspread\lanspread.exe");
        assert!(program_covers("Any", Some(exe)));
        assert!(program_covers(
            r"c:\program files\LANSPREAD\lanspread.exe",
            Some(exe)
        ));
        assert!(program_covers(
            r"%ProgramFiles%\lanspread\lanspread.exe",
            Some(exe)
        ));
        assert!(!program_covers(r"C:\Games\other.exe", Some(exe)));
        assert!(!program_covers(r"C:\Games\other.exe", None));
    }

    #[test]
    fn port_lists() {
        let ports = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(ports_cover(&ports(&["Any"]), 27600));
        assert!(ports_cover(&ports(&["80", "27600"]), 27600));
        assert!(ports_cover(&ports(&["27000-28000"]), 27600));
        assert!(!ports_cover(&ports(&["27601-28000"]), 27600));
        assert!(!ports_cover(&ports(&["RPC"]), 27600));
        assert!(!ports_cover(&[], 27600));
    }

    /// The script prints the keys the parser reads, for the port asked.
    #[test]
    fn the_script_prints_what_parse_reads() {
        for key in ["profiles = ", "firewall = ", "rules = ", "ConvertTo-Json"] {
            assert!(SCRIPT.contains(key), "{key}");
        }
        for field in [
            "name =",
            "interface =",
            "category =",
            "enabled =",
            "profile =",
            "ports =",
            "program =",
        ] {
            assert!(SCRIPT.contains(field), "{field}");
        }
        assert_eq!(SCRIPT.matches("{port}").count(), 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_verdict() {
        assert!(parse("Get-NetConnectionProfile : not recognized", 27600, None).is_err());
        let failed = FirewallReport {
            networks: Vec::new(),
            enabled_profiles: Vec::new(),
            rules: Vec::new(),
            error: Some("PowerShell did not answer in time".into()),
        };
        assert!(hints(&failed, 27600)[0].starts_with("Could not check"));
    }
}
