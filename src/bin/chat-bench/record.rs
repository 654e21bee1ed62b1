//! A pub/sub, idle or connect run as reported: named values in a fixed order, printed as one
//! JSON line or as `name value` rows for people, and read back by name by the standard set.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(u64),
    /// A figure and its decimal places.
    Num(f64, usize),
    Text(String),
    Null,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(pub Vec<(&'static str, Val)>);

impl Record {
    pub fn put(&mut self, key: &'static str, v: Val) {
        self.0.push((key, v));
    }

    pub fn int(&mut self, key: &'static str, v: u64) {
        self.put(key, Val::Int(v));
    }

    pub fn num(&mut self, key: &'static str, v: Option<f64>, places: usize) {
        self.put(key, v.map_or(Val::Null, |x| Val::Num(x, places)));
    }

    pub fn text(&mut self, key: &'static str, v: &str) {
        self.put(key, Val::Text(v.to_string()));
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A number by name (`None` for text, null or a missing key).
    pub fn f(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Val::Int(n) => Some(*n as f64),
            Val::Num(x, _) => Some(*x),
            _ => None,
        }
    }

    /// A value as a table shows it (`-` for null).
    pub fn show(&self, key: &str) -> String {
        match self.get(key) {
            Some(Val::Int(n)) => n.to_string(),
            Some(Val::Num(x, p)) => format!("{x:.p$}"),
            Some(Val::Text(t)) => t.clone(),
            Some(Val::Null) | None => "-".into(),
        }
    }

    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let v = match v {
                Val::Int(n) => n.to_string(),
                Val::Num(x, _) if !x.is_finite() => "null".into(),
                Val::Num(x, p) => format!("{x:.p$}"),
                Val::Text(t) => format!("\"{}\"", crate::report::escape(t)),
                Val::Null => "null".into(),
            };
            let _ = write!(out, "{sep}\"{k}\":{v}");
        }
        out.push('}');
        out
    }

    /// `name  value` lines.
    pub fn rows(&self) -> String {
        let mut out = String::new();
        for (k, _) in &self.0 {
            let _ = writeln!(out, "  {k:<22} {}", self.show(k));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_order_types_and_nulls() {
        let mut r = Record::default();
        r.text("scenario", "fan\"out");
        r.int("delivered", 7);
        r.num("p99_ms", Some(1.234), 2);
        r.num("server_cpu_secs", None, 2);
        assert_eq!(
            r.json(),
            "{\"scenario\":\"fan\\\"out\",\"delivered\":7,\"p99_ms\":1.23,\"server_cpu_secs\":null}"
        );
        assert_eq!((r.f("delivered"), r.f("scenario")), (Some(7.0), None));
        assert_eq!(r.show("server_cpu_secs"), "-");
        let mut r = Record::default();
        r.text("error", "no address; stderr:\nbad\tflag");
        assert_eq!(
            r.json(),
            "{\"error\":\"no address; stderr:\\u000abad\\u0009flag\"}"
        );
    }
}
