//! The Windows installer's firewall rules (`windows/hooks.nsh`) must open
//! the port the peer listens on, under the name the diagnostics look for.

use lanspread_peer::config::DEFAULT_PORT;
use lanspread_peer::peers::diagnostics::firewall::RULE_NAME;

const HOOKS: &str = include_str!("../windows/hooks.nsh");

#[test]
fn installer_rule_opens_the_default_port() {
    let rules: Vec<&str> = HOOKS
        .lines()
        .filter(|l| l.contains("firewall add rule"))
        .collect();
    assert_eq!(rules.len(), 2, "{HOOKS}");
    for rule in &rules {
        assert!(rule.contains(&format!("name=\"{RULE_NAME}\"")), "{rule}");
        assert!(rule.contains("dir=in action=allow protocol=UDP"), "{rule}");
    }
    assert!(
        rules[0].contains(&format!("localport={DEFAULT_PORT} ")),
        "{}",
        rules[0]
    );
    // Uninstalling removes what installing added.
    assert!(HOOKS.contains(&format!(
        "NSIS_HOOK_POSTUNINSTALL\n  nsExec::ExecToLog 'netsh advfirewall firewall delete rule name=\"{RULE_NAME}\"'"
    )));
}
