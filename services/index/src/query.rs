//! The search box language, turned into a safe FTS5 expression. Users type words (the last one
//! matches as a prefix while typing), `"quoted phrases"`, `word*` prefixes, `OR`, `NOT` /
//! `-word`. Nothing the user types reaches FTS5 unquoted, so no input can inject syntax; what
//! cannot be understood is an error naming the problem.

/// A parsed query: models matching any group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    /// Alternatives (`OR`).
    pub groups: Vec<Group>,
}

/// Models matching every positive phrase of the group and none of its negated ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    /// Phrases, each negated (`NOT x`, `-x`) or not.
    pub terms: Vec<(bool, Phrase)>,
}

/// Words that must appear in this order; the last one matches as a prefix when `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phrase {
    /// The words, as the tokenizer splits them.
    pub words: Vec<String>,
    /// Whether the last word is a prefix.
    pub prefix: bool,
}

/// Turns a query into an FTS5 MATCH expression; `None` for an empty query.
pub fn to_fts(query: &str) -> Result<Option<String>, String> {
    Ok(parse(query)?.map(|q| q.to_fts()))
}

/// Parses what the user typed; `None` for an empty query, an error naming the problem for a
/// malformed one.
pub fn parse(query: &str) -> Result<Option<Query>, String> {
    let query = query.trim_start();
    let typing = !query.ends_with(char::is_whitespace);
    let mut terms: Vec<Term> = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut phrase = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                phrase.push(c);
            }
            if !closed {
                return Err("a quoted phrase is not closed: add the missing `\"`".to_owned());
            }
            let prefix = chars.peek() == Some(&'*');
            if prefix {
                chars.next();
            }
            terms.push(Term::Words {
                words: words(&phrase),
                prefix,
                bare: false,
            });
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '"' {
                break;
            }
            word.push(c);
            chars.next();
        }
        match word.as_str() {
            "OR" => terms.push(Term::Or),
            "AND" => terms.push(Term::And),
            "NOT" => terms.push(Term::Not),
            _ => {
                let (negated, body) = match word.strip_prefix('-') {
                    Some(rest) if !rest.is_empty() => (true, rest),
                    _ => (false, word.as_str()),
                };
                let (body, prefix) = match body.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (body, false),
                };
                let parts = words(body);
                if parts.is_empty() {
                    continue; // punctuation only: nothing to match
                }
                if negated {
                    terms.push(Term::Not);
                }
                terms.push(Term::Words {
                    words: parts,
                    prefix,
                    bare: true,
                });
            }
        }
    }
    // A phrase of punctuation only (`" "`) matches nothing: drop it before the operators are
    // checked, or `a OR " "` would end in a dangling `OR`.
    terms.retain(|t| !matches!(t, Term::Words { words, .. } if words.is_empty()));
    // While typing, the last bare word is a prefix, from its second character: a one-letter
    // prefix (the `m` of `q4_k_m`) matches nearly every model and costs FTS5 a merge of every
    // term under that letter, tens of milliseconds at 100,000 models, for nothing a user wants.
    if typing
        && let Some(Term::Words {
            words,
            prefix,
            bare: true,
        }) = terms.last_mut()
        && words.last().is_some_and(|w| w.chars().count() >= 2)
    {
        *prefix = true;
    }
    let mut expect_term = true;
    for (i, term) in terms.iter().enumerate() {
        if !matches!(term, Term::Words { .. }) {
            let name = match term {
                Term::Or => "OR",
                Term::And => "AND",
                _ => "NOT",
            };
            if expect_term || i + 1 == terms.len() {
                return Err(format!("`{name}` must stand between two search terms"));
            }
        }
        expect_term = !matches!(term, Term::Words { .. });
    }
    let mut groups = vec![Group { terms: Vec::new() }];
    let mut negate = false;
    for term in terms {
        match term {
            Term::Words { words, prefix, .. } => {
                if let Some(group) = groups.last_mut() {
                    group.terms.push((negate, Phrase { words, prefix }));
                }
                negate = false;
            }
            Term::Or => groups.push(Group { terms: Vec::new() }),
            Term::And => {}
            Term::Not => negate = true,
        }
    }
    groups.retain(|g| !g.terms.is_empty());
    Ok((!groups.is_empty()).then_some(Query { groups }))
}

impl Query {
    /// The FTS5 MATCH expression: every phrase quoted, so nothing typed is FTS5 syntax.
    pub fn to_fts(&self) -> String {
        let phrase = |p: &Phrase| format!("\"{}\"{}", p.words.join(" "), if p.prefix { "*" } else { "" });
        let several = self.groups.len() > 1;
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let positive: Vec<String> = g.terms.iter().filter(|t| !t.0).map(|t| phrase(&t.1)).collect();
                let negative: Vec<String> = g.terms.iter().filter(|t| t.0).map(|t| phrase(&t.1)).collect();
                let mut text = positive.join(" ");
                if positive.len() > 1 && (several || !negative.is_empty()) {
                    text = format!("({text})");
                }
                for n in negative {
                    text.push_str(" NOT ");
                    text.push_str(&n);
                }
                if several && g.terms.len() > 1 {
                    text = format!("({text})");
                }
                text
            })
            .collect();
        groups.join(" OR ")
    }
}

enum Term {
    Words {
        words: Vec<String>,
        prefix: bool,
        bare: bool,
    },
    Or,
    And,
    Not,
}

/// The tokens FTS5's unicode61 tokenizer would see: runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_and_type_ahead() {
        assert_eq!(
            to_fts("juggernaut xl").unwrap(),
            Some(r#""juggernaut" "xl"*"#.to_owned())
        );
        assert_eq!(
            to_fts("juggernaut xl ").unwrap(),
            Some(r#""juggernaut" "xl""#.to_owned())
        );
        assert_eq!(to_fts("sd-xl").unwrap(), Some(r#""sd xl"*"#.to_owned()));
        assert_eq!(to_fts("   ").unwrap(), None);
    }

    #[test]
    fn operators_phrases_and_prefixes() {
        assert_eq!(
            to_fts(r#"llama OR "mistral 7b" "#).unwrap(),
            Some(r#""llama" OR "mistral 7b""#.to_owned())
        );
        assert_eq!(
            to_fts("flux -schnell ").unwrap(),
            Some(r#""flux" NOT "schnell""#.to_owned())
        );
        assert_eq!(to_fts("qwen* ").unwrap(), Some(r#""qwen"*"#.to_owned()));
        // A last word of one letter is not a prefix (it would match nearly everything).
        assert_eq!(
            to_fts("llama 7b q4_k_m").unwrap(),
            Some(r#""llama" "7b" "q4 k m""#.to_owned())
        );
        assert_eq!(to_fts("a").unwrap(), Some(r#""a""#.to_owned()));
        assert_eq!(to_fts("模型").unwrap(), Some("\"模型\"*".to_owned()));
    }

    #[test]
    fn injection_is_quoted_away() {
        // FTS5 syntax characters never reach the engine unquoted.
        assert_eq!(to_fts("a:b (c) ^d").unwrap(), Some(r#""a b" "c" "d""#.to_owned()));
        assert_eq!(to_fts("NEAR(a b)").unwrap(), Some(r#""NEAR a" "b""#.to_owned()));
    }

    #[test]
    fn malformed_queries_say_why() {
        assert!(to_fts(r#""unclosed"#).unwrap_err().contains("not closed"));
        assert!(to_fts("OR llama").unwrap_err().contains("between"));
        assert!(to_fts("llama NOT").unwrap_err().contains("between"));
        // An empty phrase is no term: the operator before it dangles (found by proptest).
        assert!(to_fts(r#"NEAR( - OR " " "#).unwrap_err().contains("between"));
    }
}
