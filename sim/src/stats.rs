//! Percentiles, and the markdown tables the scenarios print.

use std::time::Duration;

/// The `p`-th percentile (0–100) of `values`, nearest rank; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

pub fn secs(d: Option<f64>) -> String {
    d.map_or_else(|| "–".into(), |s| format!("{s:.2} s"))
}

pub fn since(later: std::time::Instant, earlier: std::time::Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64()
}

/// Bytes in a short human form (decimal: KB = 1000 B, as the table).
pub fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// A tc rate (`100mbit`, `1gbit`, `500kbit`, `12345bit`) in bits per second.
pub fn parse_rate(rate: &str) -> anyhow::Result<f64> {
    let lower = rate.to_ascii_lowercase();
    let (number, unit) = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((lower.as_str(), ""), |i| lower.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("bad rate `{rate}`"))?;
    let scale = match unit {
        "" | "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => anyhow::bail!("bad rate `{rate}`: use bit, kbit, mbit or gbit"),
    };
    Ok(n * scale)
}

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "| {} |", self.header.join(" | "))?;
        writeln!(f, "|{}", "---|".repeat(self.header.len()))?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}

pub fn dur(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 50.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn tc_rates() {
        assert_eq!(parse_rate("100mbit").unwrap(), 1e8);
        assert_eq!(parse_rate("1gbit").unwrap(), 1e9);
        assert_eq!(parse_rate("2.5mbit").unwrap(), 2.5e6);
        assert!(parse_rate("fast").is_err());
    }
}
