//! The two forms of a [`Report`]: text that reads at a glance (one line
//! per check, the fix under it, a summary line; colour only when asked,
//! which the command does on a TTY) and JSON (the schema in
//! docs/doctor.md). Hand-written text layout; JSON through serde.
//! Nothing here looks anything up.

use std::fmt::Write as _;

use super::{Check, Report, Status};

/// ANSI colour for a status word, or nothing.
fn paint(status: Status, colour: bool) -> String {
    let word = status.word();
    if !colour {
        return format!("{word:<4}");
    }
    let code = match status {
        Status::Ok => "32",
        Status::Warn => "33",
        Status::Fail => "31",
    };
    format!("\x1b[1;{code}m{word:<4}\x1b[0m")
}

fn check_line(out: &mut String, check: &Check, colour: bool) {
    let mut label = check.id.word().to_string();
    if let Some(selector) = &check.selector {
        label = format!("{label} {selector}");
    }
    if let Some(ip) = &check.ip {
        label = format!("{label} {ip}");
    }
    let _ = writeln!(
        out,
        "  {}  {label:<22} {}",
        paint(check.status, colour),
        check.message
    );
    let Some(fix) = &check.fix else {
        return;
    };
    let _ = writeln!(out, "        fix: {}", fix.action);
    for record in &fix.records {
        let _ = writeln!(out, "          zone file: {}", record.zone);
        let _ = writeln!(
            out,
            "          web form:  host {}  type {}  value {}",
            record.host, record.kind, record.value
        );
    }
}

/// The text form.
pub fn text(report: &Report, colour: bool) -> String {
    let mut out = String::new();
    let ips: Vec<String> = report
        .host
        .ips
        .iter()
        .map(|ip| format!("{} ({})", ip.value, ip.source))
        .collect();
    let _ = writeln!(
        out,
        "sending IPs: {}",
        if ips.is_empty() {
            "none found (pass --ip)".to_string()
        } else {
            ips.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "HELO name: {}",
        match &report.host.helo {
            Some(helo) => format!("{} ({})", helo.value, helo.source),
            None => "unknown (pass --helo)".to_string(),
        }
    );
    for domain in &report.domains {
        let _ = writeln!(out, "{} (from {})", domain.domain, domain.source);
        for check in &domain.checks {
            check_line(&mut out, check, colour);
        }
    }
    if !report.host.checks.is_empty() {
        let _ = writeln!(out, "this host");
        for check in &report.host.checks {
            check_line(&mut out, check, colour);
        }
    }
    let summary = &report.summary;
    let _ = writeln!(
        out,
        "summary: {} ok, {} warn, {} fail: {}",
        summary.ok,
        summary.warn,
        summary.fail,
        paint(summary.status, colour).trim_end()
    );
    out
}

/// The JSON form, one document with a final newline.
pub fn json(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        // Every field is a string, a number or a list of them.
        format!("{{\"error\":\"cannot encode the report: {e}\"}}")
    });
    text.push('\n');
    text
}
