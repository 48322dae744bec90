; Windows installer hooks (tauri bundle > windows > nsis > installerHooks).
;
; Windows drops inbound UDP unless a firewall rule allows it, so peers could
; not reach this one. The installer (per machine, elevated) adds two inbound
; rules named "lanspread" for private and domain networks: one for the app's
; UDP port, one for the app itself (its mDNS answers). A Public network stays
; closed; the diagnostics report says so and how to switch it to Private.
; The port is lanspread_peer::config::DEFAULT_PORT (a test in
; src-tauri/src/installer.rs checks that they agree).

!macro NSIS_HOOK_POSTINSTALL
  nsExec::ExecToLog 'netsh advfirewall firewall delete rule name="lanspread"'
  nsExec::ExecToLog 'netsh advfirewall firewall add rule name="lanspread" dir=in action=allow protocol=UDP localport=27600 profile=private,domain'
  nsExec::ExecToLog 'netsh advfirewall firewall add rule name="lanspread" dir=in action=allow protocol=UDP program="$INSTDIR\lanspread.exe" profile=private,domain'
!macroend

!macro NSIS_HOOK_POSTUNINSTALL
  nsExec::ExecToLog 'netsh advfirewall firewall delete rule name="lanspread"'
!macroend
