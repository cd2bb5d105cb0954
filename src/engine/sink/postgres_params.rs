//! `--sql` takes the SQLite sink's `:name` parameters; PostgreSQL takes `$n`.
//! The rewrite has to skip what PostgreSQL's lexer does not read as code, or
//! a `:word` in a string or comment becomes a parameter no record can bind.

/// `:name` parameters turned into `$n` (a name used twice is one parameter),
/// leaving alone strings (`'…'` with `''` inside, `E'…'` with `\'` too,
/// `$tag$…$tag$`), quoted identifiers, `--` and nested `/* */` comments and
/// `::` casts. Returns the statement and the names in parameter order.
pub fn positional(sql: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = sql.chars().collect();
    let n = chars.len();
    let (mut out, mut names) = (String::with_capacity(sql.len()), Vec::<String>::new());
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < n {
        let next = chars.get(i + 1).copied();
        let end = match chars[i] {
            '\'' => {
                let escapes = i > 0 && matches!(chars[i - 1], 'E' | 'e') && (i < 2 || !word(chars[i - 2]));
                string_end(&chars, i, escapes)
            }
            '"' => (i + 1..n).find(|&j| chars[j] == '"').map_or(n, |j| j + 1),
            '-' if next == Some('-') => (i..n).find(|&j| chars[j] == '\n').map_or(n, |j| j + 1),
            '/' if next == Some('*') => comment_end(&chars, i),
            '$' if i == 0 || !word(chars[i - 1]) => dollar_end(&chars, i).unwrap_or(i + 1),
            ':' if next == Some(':') => i + 2,
            ':' if next.is_some_and(|c| c.is_ascii_alphabetic() || c == '_') => {
                let end = (i + 1..n).find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_')).unwrap_or(n);
                let name: String = chars[i + 1..end].iter().collect();
                let position = match names.iter().position(|x| *x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name);
                        names.len()
                    }
                };
                out.push_str(&format!("${position}"));
                i = end;
                continue;
            }
            _ => i + 1,
        };
        out.extend(&chars[i..end]);
        i = end;
    }
    (out, names)
}

/// Past the string opening at `start`; `''` is a quote inside it, and so is
/// `\'` in an `E'…'` string.
fn string_end(chars: &[char], start: usize, escapes: bool) -> usize {
    let mut j = start + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if escapes => j += 2,
            '\'' if chars.get(j + 1) == Some(&'\'') => j += 2,
            '\'' => return j + 1,
            _ => j += 1,
        }
    }
    chars.len()
}

/// Past the comment opening at `start`; PostgreSQL's block comments nest.
fn comment_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut j) = (0, start);
    while j + 1 < chars.len() {
        match (chars[j], chars[j + 1]) {
            ('/', '*') => {
                depth += 1;
                j += 2;
            }
            ('*', '/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    chars.len()
}

/// Past the `$tag$…$tag$` string opening at `start`; None when the `$` does
/// not open one (a `$1` parameter: a tag never starts with a digit).
fn dollar_end(chars: &[char], start: usize) -> Option<usize> {
    if chars.get(start + 1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let close = (start + 1..chars.len()).find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))?;
    if chars[close] != '$' {
        return None;
    }
    let tag = &chars[start..=close];
    let body = close + 1;
    Some((body..chars.len()).find(|&j| chars[j..].starts_with(tag)).map_or(chars.len(), |j| j + tag.len()))
}

#[cfg(test)]
mod tests {
    use super::positional;

    #[test]
    fn named_parameters_become_positional_outside_strings_casts_and_comments() {
        let (sql, names) = positional(
            "INSERT INTO t(a, b, c) VALUES(:customer, :amount::numeric, ':not' || \":nope\") -- :comment\n ON CONFLICT (a) DO UPDATE SET b = t.b + :amount",
        );
        assert_eq!(sql, "INSERT INTO t(a, b, c) VALUES($1, $2::numeric, ':not' || \":nope\") -- :comment\n ON CONFLICT (a) DO UPDATE SET b = t.b + $2");
        assert_eq!(names, vec!["customer", "amount"]);
    }

    #[test]
    fn escaped_dollar_quoted_and_block_commented_words_are_not_parameters() {
        let sql = "SELECT E'it\\'s :a', 'it''s :b', $$ :c $$, $fn$ it's :d $fn$, /* :e /* :f */ :g */ :h, x[1:2], $1";
        let (out, names) = positional(sql);
        assert_eq!(out, sql.replace(":h", "$1"));
        assert_eq!(names, vec!["h"]);
        // Where E is part of a word, the string is a plain one.
        assert_eq!(positional("SELECT note'x\\' :y").1, vec!["y"]);
        // Unterminated: the rest is the string or comment.
        assert!(positional("SELECT ':a").1.is_empty());
        assert!(positional("SELECT /* :a").1.is_empty());
        assert!(positional("SELECT $q$ :a").1.is_empty());
    }
}
