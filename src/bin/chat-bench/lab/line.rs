//! One JSON line of the lab's output: named values in the order they were put, numbers with
//! their decimal places, `null` for a figure that was not measured, and one level of nested
//! object (the syscall names). Only building and printing; it never reads anything back
//! except by name, for the lab's own decisions and its tests.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Int(u64),
    /// A figure and its decimal places.
    Num(f64, usize),
    Text(String),
    Bool(bool),
    Null,
    /// Names and figures with their decimal places, in order.
    Object(Vec<(String, f64, usize)>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line(Vec<(String, Field)>);

impl Line {
    pub fn put(&mut self, key: &str, v: Field) {
        self.0.push((key.to_string(), v));
    }

    pub fn int(&mut self, key: &str, v: u64) {
        self.put(key, Field::Int(v));
    }

    /// A figure, or `null` when there is none (a figure not measured is never 0).
    pub fn num(&mut self, key: &str, v: Option<f64>, places: usize) {
        self.put(key, v.map_or(Field::Null, |x| Field::Num(x, places)));
    }

    pub fn text(&mut self, key: &str, v: &str) {
        self.put(key, Field::Text(v.to_string()));
    }

    pub fn bool(&mut self, key: &str, v: bool) {
        self.put(key, Field::Bool(v));
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Field> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}\"{}\":{}", crate::report::escape(k), value(v));
        }
        out.push('}');
        out
    }
}

fn value(v: &Field) -> String {
    match v {
        Field::Int(n) => n.to_string(),
        Field::Num(x, p) => number(*x, *p),
        Field::Text(t) => format!("\"{}\"", crate::report::escape(t)),
        Field::Bool(b) => b.to_string(),
        Field::Null => "null".into(),
        Field::Object(members) => {
            let mut out = String::from("{");
            for (i, (k, x, p)) in members.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(
                    out,
                    "{sep}\"{}\":{}",
                    crate::report::escape(k),
                    number(*x, *p)
                );
            }
            out.push('}');
            out
        }
    }
}

/// JSON has no NaN or infinity: such a figure is `null`.
fn number(x: f64, places: usize) -> String {
    if x.is_finite() {
        format!("{x:.places$}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_keeps_order_types_nulls_and_a_nested_object() {
        let mut l = Line::default();
        l.text("model", "re\"actor");
        l.int("conns", 4);
        l.num("cpu_mean_pct", Some(2.3456), 2);
        l.num("cpu_cv", None, 3);
        l.num("odd", Some(f64::NAN), 1);
        l.bool("survived", true);
        l.put(
            "syscalls_top",
            Field::Object(vec![
                ("write".into(), 2.0, 3),
                ("epoll_wait".into(), 0.5, 3),
            ]),
        );
        assert_eq!(
            l.json(),
            "{\"model\":\"re\\\"actor\",\"conns\":4,\"cpu_mean_pct\":2.35,\"cpu_cv\":null,\
             \"odd\":null,\"survived\":true,\
             \"syscalls_top\":{\"write\":2.000,\"epoll_wait\":0.500}}"
        );
        assert_eq!(l.get("conns"), Some(&Field::Int(4)));
        assert_eq!(l.get("nothing"), None);
    }
}
