//! Reading the Prometheus text exposition format (version 0.0.4): the one parser of what a metrics manager
//! serves, used by the tracker, the benchmark and the tests. [`crate::render`] writes the format; this reads it back.
//!
//! ```text
//! # HELP egret_emit_count Tuples emitted by a task (emit calls), per output stream.
//! # TYPE egret_emit_count counter
//! egret_emit_count{topology="t",component="word",task="3",stream="default"} 42
//! egret_complete_latency_bucket{topology="t",component="word",task="3",le="+Inf"} 7 1700000000000
//! ```
//!
//! A sample line is a metric name, optional labels in braces (values quoted, with `\\`, `\"` and `\n` escaped), a
//! value (a float, `NaN`, `+Inf` or `-Inf`) and an optional timestamp in milliseconds. `# HELP` and `# TYPE` lines
//! are checked and skipped, other comments and blank lines skipped. The text comes from another process, so
//! anything else is an error naming the line, never a panic; a histogram's series are plain samples here (its
//! `_bucket` series carry the `le` label).

use std::fmt;

/// One sample: a series (name and labels, in the order written) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line gives one (Egret's metrics managers never do).
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Why a text is not valid exposition format, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// From 1.
    pub line: usize,
    pub problem: String,
}

/// The metric types a `# TYPE` line may name.
const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// Parses a whole exposition text into its samples, in the order written; fails at the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fail = |problem: Problem| ParseError {
            line: index + 1,
            problem: problem.to_string(),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            check_comment(comment).map_err(fail)?;
            continue;
        }
        samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(samples)
}

/// What is wrong with one line; [`parse`] adds the line number.
#[derive(Debug)]
enum Problem {
    BadMetricName(String),
    BadLabelName(String),
    DuplicateLabel(String),
    ExpectedChar { expected: char, found: Option<char> },
    BadEscape(Option<char>),
    UnclosedLabelValue(String),
    MissingValue,
    BadValue(String),
    BadTimestamp(String),
    TrailingText(String),
    BadType(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadMetricName(n) => write!(f, "{n:?} is not a metric name"),
            Problem::BadLabelName(n) => write!(f, "{n:?} is not a label name"),
            Problem::DuplicateLabel(n) => write!(f, "label {n:?} is given twice"),
            Problem::ExpectedChar {
                expected,
                found: Some(c),
            } => write!(f, "expected {expected:?}, found {c:?}"),
            Problem::ExpectedChar { expected, found: None } => write!(f, "expected {expected:?}, found the line's end"),
            Problem::BadEscape(Some(c)) => {
                write!(f, "\\{c} is not an escape of a label value (only \\\\, \\\" and \\n)")
            }
            Problem::BadEscape(None) => write!(f, "a label value ends in a lone backslash"),
            Problem::UnclosedLabelValue(n) => write!(f, "the value of label {n:?} is not closed"),
            Problem::MissingValue => write!(f, "a sample without a value"),
            Problem::BadValue(v) => write!(f, "{v:?} is not a sample value"),
            Problem::BadTimestamp(t) => write!(f, "{t:?} is not a timestamp in milliseconds"),
            Problem::TrailingText(t) => write!(f, "unexpected {t:?} after the timestamp"),
            Problem::BadType(t) => write!(f, "{t:?} is not a metric type (one of {})", TYPES.join(", ")),
        }
    }
}

/// `# HELP name text` and `# TYPE name type` must name a metric (and a known type); other comments are free text.
fn check_comment(comment: &str) -> Result<(), Problem> {
    let mut words = comment.split_whitespace();
    let keyword = words.next();
    if keyword != Some("HELP") && keyword != Some("TYPE") {
        return Ok(());
    }
    let name = words.next().unwrap_or("");
    if !is_metric_name(name) {
        return Err(Problem::BadMetricName(name.to_string()));
    }
    if keyword == Some("TYPE") {
        let kind = words.collect::<Vec<_>>().join(" ");
        if !TYPES.contains(&kind.as_str()) {
            return Err(Problem::BadType(kind));
        }
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `name{labels} value [timestamp]` (a trimmed line that is not a comment).
fn parse_sample(line: &str) -> Result<Sample, Problem> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(Problem::BadMetricName(name.to_string()));
    }
    // Blanks may stand between the name and its labels, as Prometheus' own parser allows.
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or(Problem::MissingValue)?;
    let value = parse_value(value).ok_or_else(|| Problem::BadValue(value.to_string()))?;
    let timestamp_ms = fields
        .next()
        .map(|t| t.parse::<i64>().map_err(|_| Problem::BadTimestamp(t.to_string())))
        .transpose()?;
    if let Some(extra) = fields.next() {
        return Err(Problem::TrailingText(extra.to_string()));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `k="v",k2="v2"}` (the text after `{`, a trailing comma allowed) into `labels`; returns the text after `}`.
fn parse_labels<'a>(text: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, Problem> {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| c == '=' || c == '}' || c == ',' || c == '"' || c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !is_label_name(name) {
            return Err(Problem::BadLabelName(name.to_string()));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(Problem::DuplicateLabel(name.to_string()));
        }
        rest = expect(rest[name_end..].trim_start(), '=')?;
        rest = expect(rest.trim_start(), '"')?;
        let (value, after) = parse_label_value(rest).map_err(|problem| match problem {
            Problem::UnclosedLabelValue(_) => Problem::UnclosedLabelValue(name.to_string()),
            other => other,
        })?;
        labels.push((name.to_string(), value));
        rest = after.trim_start();
        // A comma separates labels and may follow the last one; otherwise the braces must close.
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.starts_with('}') => {}
            None => return Err(expected('}', rest)),
        }
    }
}

fn expect(text: &str, c: char) -> Result<&str, Problem> {
    text.strip_prefix(c).ok_or_else(|| expected(c, text))
}

fn expected(c: char, found: &str) -> Problem {
    Problem::ExpectedChar {
        expected: c,
        found: found.chars().next(),
    }
}

/// Reads a label value up to its closing quote, unescaping it; returns the value and the text after the quote.
fn parse_label_value(text: &str) -> Result<(String, &str), Problem> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('\\') => value.push('\\'),
                Some('"') => value.push('"'),
                Some('n') => value.push('\n'),
                other => return Err(Problem::BadEscape(other)),
            },
            c => value.push(c),
        }
    }
    Err(Problem::UnclosedLabelValue(String::new()))
}

/// A sample value as Prometheus writes it: a float, or `NaN`, `+Inf`, `-Inf` (Go's spellings, any case, `Inf`
/// unsigned too). Rust's float parser would also take `infinity` and `nan`: those are not the format's. A
/// histogram bucket's `le` label holds its upper bound in the same syntax, so this reads those too.
pub fn parse_value(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        lower if lower.contains("inf") || lower.contains("nan") => None,
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
            value,
            timestamp_ms: None,
        }
    }

    /// Parses `text`, which must hold exactly one sample, and compares it with `expected` (NaN equal to NaN).
    fn check(text: &str, expected: Sample) {
        let samples = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(samples.len(), 1, "{text:?}: {samples:?}");
        let got = &samples[0];
        assert_eq!(
            (&got.name, &got.labels, got.timestamp_ms),
            (&expected.name, &expected.labels, expected.timestamp_ms),
            "{text:?}"
        );
        assert_eq!(got.value.to_bits(), expected.value.to_bits(), "{text:?}: {}", got.value);
    }

    /// Parses `text`, which must fail on line `line` with a message containing `problem`.
    fn check_error(text: &str, line: usize, problem: &str) {
        match parse(text) {
            Ok(samples) => panic!("{text:?} parsed: {samples:?}"),
            Err(e) => {
                assert_eq!(e.line, line, "{text:?}: {e}");
                assert!(e.problem.contains(problem), "{text:?}: {e} lacks {problem:?}");
            }
        }
    }

    #[test]
    fn samples_parse() {
        check("plain 7", sample("plain", &[], 7.0));
        check("m{} 2", sample("m", &[], 2.0));
        check(
            r#"egret_emit_count{topology="t",component="word",task="3",stream="default"} 42"#,
            sample(
                "egret_emit_count",
                &[
                    ("topology", "t"),
                    ("component", "word"),
                    ("task", "3"),
                    ("stream", "default"),
                ],
                42.0,
            ),
        );
        check(r#"m{a="b",} 3"#, sample("m", &[("a", "b")], 3.0));
        check(
            r#"  m { a = "b" , c="d" }   1.5e3  "#,
            sample("m", &[("a", "b"), ("c", "d")], 1500.0),
        );
        check("m\t-0.25", sample("m", &[], -0.25));
        check("ns:sub_total 1", sample("ns:sub_total", &[], 1.0));
        check(
            r#"m{a="x\"}\\y\nz",b="{,= }"} 1"#,
            sample("m", &[("a", "x\"}\\y\nz"), ("b", "{,= }")], 1.0),
        );
        check(r#"m{a="é ☃"} 1"#, sample("m", &[("a", "é ☃")], 1.0));
        check("m NaN", sample("m", &[], f64::NAN));
        check("m +Inf", sample("m", &[], f64::INFINITY));
        check("m Inf", sample("m", &[], f64::INFINITY));
        check("m -Inf", sample("m", &[], f64::NEG_INFINITY));
        check(r#"h_bucket{le="+Inf"} 17"#, sample("h_bucket", &[("le", "+Inf")], 17.0));
        let mut stamped = sample("m", &[("a", "b")], 0.0);
        stamped.timestamp_ms = Some(1_700_000_000_000);
        check(r#"m{a="b"} 0 1700000000000"#, stamped.clone());
        stamped.timestamp_ms = Some(-5);
        check(r#"m{a="b"} 0 -5"#, stamped);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_counted() {
        let text = "# HELP egret_x Some help, with \\\\ and \\n escapes.\n\
                    # TYPE egret_x counter\n\
                    \n\
                    # a free comment: anything { goes\n\
                    #\n\
                    egret_x{task=\"1\"} 1\n\
                    # TYPE egret_h histogram\n\
                    egret_h_bucket{le=\"0.5\"} 1\n\
                    egret_h_bucket{le=\"+Inf\"} 2\n\
                    egret_h_sum 0.75\n\
                    egret_h_count 2\n";
        let samples = parse(text).unwrap();
        let names: Vec<_> = samples.iter().map(|s| (s.name.as_str(), s.value)).collect();
        assert_eq!(
            names,
            [
                ("egret_x", 1.0),
                ("egret_h_bucket", 1.0),
                ("egret_h_bucket", 2.0),
                ("egret_h_sum", 0.75),
                ("egret_h_count", 2.0)
            ]
        );
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert_eq!(samples[0].label("le"), None);
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("\n\n# only comments\n").unwrap(), []);
        check_error("a 1\nb 2\n\nc{ 3\n", 4, "label name");
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            (r#"m{a="b"}"#, "without a value"),
            ("m", "without a value"),
            ("m one", "\"one\" is not a sample value"),
            ("m infinity", "not a sample value"),
            ("m nan5", "not a sample value"),
            ("m 1 2 3", "unexpected \"3\""),
            ("m 1 1.5", "not a timestamp"),
            ("1m 1", "not a metric name"),
            ("m-x 1", "not a metric name"),
            (r#"{a="b"} 1"#, "not a metric name"),
            (r#"m{a="b" 3"#, "expected '}'"),
            (r#"m{a="b"c="d"} 3"#, "expected '}'"),
            ("m{a=b} 3", "expected '\"'"),
            (r#"m{a"b"} 3"#, "expected '='"),
            (r#"m{="b"} 3"#, "\"\" is not a label name"),
            (r#"m{1a="b"} 3"#, "not a label name"),
            (r#"m{a:b="c"} 3"#, "not a label name"),
            (r#"m{a="b",a="c"} 3"#, "label \"a\" is given twice"),
            (r#"m{a="b\t"} 3"#, "not an escape"),
            (r#"m{a="b\"#, "lone backslash"),
            (r#"m{a="b} 3"#, "label \"a\" is not closed"),
            ("m{", "label name"),
            ("m{a", "expected '='"),
            (r#"m{a="b","#, "label name"),
            ("# TYPE m", "not a metric type"),
            ("# TYPE m countr", "\"countr\" is not a metric type"),
            ("# TYPE 9m counter", "not a metric name"),
            ("# HELP", "not a metric name"),
        ];
        for (text, problem) in cases {
            check_error(text, 1, problem);
        }
    }

    #[test]
    fn errors_say_the_line() {
        let e = parse("ok 1\nbad").unwrap_err();
        assert_eq!(e.to_string(), "line 2: a sample without a value");
    }
}
