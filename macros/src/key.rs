//! The key template: literal text with placeholders, `{{` and `}}` for braces.
//!
//! A placeholder names a parameter (or `self`), optionally a field path after it
//! (`{self.id}`, `{query.page}`), and optionally `:?` to write its `Debug` output.

use syn::LitStr;

/// One piece of a key template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Text taken as written.
    Literal(String),
    /// A parameter (or `self`), or a field of it, written as a key part.
    Param(Placeholder),
}

/// One `{…}` of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// The parameter it starts from.
    pub(crate) param: String,
    /// Fields read from it, in order (`self.owner.id` → `["owner", "id"]`).
    pub(crate) fields: Vec<String>,
    /// `{x:?}`: written with `Debug`.
    pub(crate) debug: bool,
}

/// Parses `template`, checking each placeholder against `params`; errors are spanned
/// on the literal.
pub(crate) fn parse(template: &LitStr, params: &[String]) -> syn::Result<Vec<Segment>> {
    parse_text(&template.value(), Some(params))
        .map_err(|why| syn::Error::new_spanned(template, why))
}

/// Parses `template` without checking what its placeholders name (a batch's template
/// names its element, which is no parameter).
pub(crate) fn parse_unchecked(template: &LitStr) -> syn::Result<Vec<Segment>> {
    parse_text(&template.value(), None).map_err(|why| syn::Error::new_spanned(template, why))
}

/// `params`: the names a placeholder may start from; `None` for any name.
fn parse_text(text: &str, params: Option<&[String]>) -> Result<Vec<Segment>, String> {
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
                let placeholder = placeholder(&name, params)?;
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Param(placeholder));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

fn placeholder(text: &str, params: Option<&[String]>) -> Result<Placeholder, String> {
    let (path, spec) = match text.split_once(':') {
        Some((path, spec)) => (path.trim(), Some(spec.trim())),
        None => (text.trim(), None),
    };
    let debug = match spec {
        None => false,
        Some("?") => true,
        Some(spec) => {
            return Err(format!(
                "`{{{text}}}`: a key template takes no format spec but `:?`; write `{{{path}}}` for the argument's key form (`Display`, escaped) or `{{{path}:?}}` for its `Debug` output, not `:{spec}`"
            ));
        }
    };
    let mut names = path.split('.').map(str::trim);
    let param = names.next().unwrap_or_default().to_owned();
    match params {
        Some(params) if !params.contains(&param) => return Err(no_such_param(&param, params)),
        None if !is_field(&param) || param.starts_with(|c: char| c.is_ascii_digit()) => {
            return Err(if param.is_empty() {
                "empty placeholder `{}` in the key template; name a parameter, or the element"
                    .to_owned()
            } else {
                format!(
                    "`{{{param}}}` in the key template is not a name; a placeholder is a parameter or the element, optionally followed by fields, as in `{{id.name}}`"
                )
            });
        }
        _ => {}
    }
    let fields: Vec<String> = names.map(str::to_owned).collect();
    if let Some(bad) = fields.iter().find(|f| !is_field(f)) {
        return Err(format!(
            "`{{{text}}}`: `{bad}` is not a field name; a placeholder is a parameter, optionally followed by fields, as in `{{self.id}}`"
        ));
    }
    Ok(Placeholder {
        param,
        fields,
        debug,
    })
}

fn is_field(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => name.chars().all(|c| c.is_ascii_digit()),
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {
            chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        }
        _ => false,
    }
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

    fn param(name: &str) -> Segment {
        Segment::Param(Placeholder {
            param: name.into(),
            fields: Vec::new(),
            debug: false,
        })
    }

    #[test]
    fn splits_literals_and_placeholders() {
        let parsed = parse_text("user:{id}:page:{page}", Some(&params()));
        assert_eq!(
            parsed,
            Ok(vec![
                Segment::Literal("user:".into()),
                param("id"),
                Segment::Literal(":page:".into()),
                param("page"),
            ])
        );
    }

    #[test]
    fn reads_fields_and_debug() {
        let parsed = parse_text("{id.owner.0:?}", Some(&params()));
        assert_eq!(
            parsed,
            Ok(vec![Segment::Param(Placeholder {
                param: "id".into(),
                fields: vec!["owner".into(), "0".into()],
                debug: true,
            })])
        );
    }

    #[test]
    fn rejects_format_specs_other_than_debug() {
        assert!(parse_text("{id:>5}", Some(&params())).is_err_and(|e| e.contains("`{id:?}`")));
        assert!(parse_text("{id:#?}", Some(&params())).is_err());
        assert!(parse_text("{id.}", Some(&params())).is_err_and(|e| e.contains("not a field")));
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(
            parse_text("{{x}}", Some(&params())),
            Ok(vec![Segment::Literal("{x}".into())])
        );
    }

    #[test]
    fn unchecked_names_may_be_no_parameter_but_must_be_names() {
        assert_eq!(
            parse_text("user:{id.name:?}", None),
            Ok(vec![
                Segment::Literal("user:".into()),
                Segment::Param(Placeholder {
                    param: "id".into(),
                    fields: vec!["name".into()],
                    debug: true,
                }),
            ])
        );
        assert!(parse_text("{}", None).is_err_and(|e| e.contains("empty placeholder")));
        assert!(parse_text("{0}", None).is_err_and(|e| e.contains("not a name")));
        assert!(parse_text("{a-b}", None).is_err_and(|e| e.contains("not a name")));
    }

    #[test]
    fn rejects_unknown_names_and_unbalanced_braces() {
        assert!(parse_text("{nope}", Some(&params())).is_err_and(|e| e.contains("`id`, `page`")));
        assert!(parse_text("{id", Some(&params())).is_err_and(|e| e.contains("unbalanced `{`")));
        assert!(parse_text("id}", Some(&params())).is_err_and(|e| e.contains("unbalanced `}`")));
        assert!(parse_text("{}", Some(&params())).is_err_and(|e| e.contains("empty placeholder")));
    }
}
