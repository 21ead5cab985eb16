//! Reading Distribution's YAML: the document as JSON values, its booleans and scalars as Go's
//! YAML decoder reads them, and its durations (`10s`, `1h30m`) as Go's `time.ParseDuration` does.

use serde_json::Value as Yaml;

pub(super) fn truthy(v: &Yaml) -> bool {
    match v {
        Yaml::Bool(b) => *b,
        Yaml::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

pub(super) fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A parsed YAML document as JSON values (the shapes a registry config uses: maps with string
/// keys, lists, scalars). A pure-Rust YAML parser, so the binary embeds no libyaml.
pub(super) fn to_json(y: &yaml_rust2::Yaml) -> Yaml {
    use yaml_rust2::Yaml as Y;
    match y {
        Y::String(s) => Yaml::String(s.clone()),
        Y::Integer(i) => Yaml::from(*i),
        Y::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Yaml::Number)
            .unwrap_or_else(|| Yaml::String(r.clone())),
        Y::Boolean(b) => Yaml::Bool(*b),
        Y::Array(a) => Yaml::Array(a.iter().map(to_json).collect()),
        Y::Hash(h) => Yaml::Object(
            h.iter()
                .filter_map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        Y::Integer(i) => i.to_string(),
                        Y::Boolean(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((key, to_json(v)))
                })
                .collect(),
        ),
        Y::Alias(_) | Y::Null | Y::BadValue => Yaml::Null,
    }
}

/// A Go duration (`10s`, `168h`, `1h30m`, `500ms`) or a bare number of nanoseconds, in whole
/// seconds (rounded up). Longer than Go's own limit (i64::MAX nanoseconds, about 292 years), which
/// Distribution would refuse too, is an error rather than a number that overflowed.
pub(super) fn duration_secs(v: &Yaml) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        // Go reads a bare number in YAML as nanoseconds.
        return Ok(n.div_ceil(1_000_000_000));
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("{v:?} is not a duration"))?;
    const MAX_NS: u128 = i64::MAX as u128;
    let too_long =
        || format!("{s:?} is longer than a Go duration can be (2562047h, about 292 years)");
    let mut total_ns: u128 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{s:?}: a number without a unit"))?;
        let (whole, frac) = rest[..digits]
            .split_once('.')
            .unwrap_or((&rest[..digits], ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("{s:?} is not a duration like 10s or 1h30m"));
        }
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            u => return Err(format!("{s:?}: unknown unit {u:?}")),
        };
        rest = &rest[unit_len..];
        // Exact integers: 39 digits overflow u128, and anything past 19 is over the limit anyway.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 19 {
            return Err(too_long());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        // Eighteen fractional digits are finer than a nanosecond of an hour; the rest cannot count.
        let frac = &frac[..frac.len().min(18)];
        let scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| too_long())?
        };
        let term = whole
            .checked_mul(unit_ns)
            .and_then(|w| w.checked_add((frac * unit_ns).div_ceil(scale)))
            .ok_or_else(too_long)?;
        total_ns = total_ns.checked_add(term).ok_or_else(too_long)?;
        if total_ns > MAX_NS {
            return Err(too_long());
        }
    }
    // At most i64::MAX nanoseconds: about 9.2e9 seconds, a u64 and a TOML integer alike.
    Ok(total_ns.div_ceil(1_000_000_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| duration_secs(&Yaml::String(s.into()));
        assert_eq!(d("10s"), Ok(10));
        assert_eq!(d("168h"), Ok(604_800));
        assert_eq!(d("1h30m"), Ok(5_400));
        assert_eq!(d("500ms"), Ok(1));
        assert!(d("ten").is_err());
        assert!(d("10").is_err());
        assert!(d("5d").is_err());
    }
}
