//! The key template: literal text with `{param}` placeholders, `{{` and `}}` for braces.

use syn::LitStr;

/// One piece of a key template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Text taken as written.
    Literal(String),
    /// A parameter (or `self`) whose `Display` output is escaped and interpolated.
    Param(String),
}

/// Parses `template`, checking each placeholder against `params`; errors are spanned
/// on the literal.
pub(crate) fn parse(template: &LitStr, params: &[String]) -> syn::Result<Vec<Segment>> {
    parse_text(&template.value(), params).map_err(|why| syn::Error::new_spanned(template, why))
}

fn parse_text(text: &str, params: &[String]) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(
                    "unbalanced `}` in the key template; write `}}` for a literal brace".into(),
                );
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err("unbalanced `{` in the key template; close the placeholder with `}`, or write `{{` for a literal brace".into());
                        }
                        Some(c) => name.push(c),
                    }
                }
                let name = name.trim().to_owned();
                if !params.contains(&name) {
                    return Err(no_such_param(&name, params));
                }
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Param(name));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

fn no_such_param(name: &str, params: &[String]) -> String {
    let listed = if params.is_empty() {
        "the function has no parameters".to_owned()
    } else {
        format!(
            "parameters: {}",
            params
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if name.is_empty() {
        format!("empty placeholder `{{}}` in the key template; name a parameter ({listed})")
    } else {
        format!("`{{{name}}}` in the key template names no parameter ({listed})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<String> {
        vec!["id".into(), "page".into()]
    }

    #[test]
    fn splits_literals_and_placeholders() {
        let parsed = parse_text("user:{id}:page:{page}", &params());
        assert_eq!(
            parsed,
            Ok(vec![
                Segment::Literal("user:".into()),
                Segment::Param("id".into()),
                Segment::Literal(":page:".into()),
                Segment::Param("page".into()),
            ])
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(
            parse_text("{{x}}", &params()),
            Ok(vec![Segment::Literal("{x}".into())])
        );
    }

    #[test]
    fn rejects_unknown_names_and_unbalanced_braces() {
        assert!(parse_text("{nope}", &params()).is_err_and(|e| e.contains("`id`, `page`")));
        assert!(parse_text("{id", &params()).is_err_and(|e| e.contains("unbalanced `{`")));
        assert!(parse_text("id}", &params()).is_err_and(|e| e.contains("unbalanced `}`")));
        assert!(parse_text("{}", &params()).is_err_and(|e| e.contains("empty placeholder")));
    }
}
