//! Variable expansion in dotenv values, as python-dotenv 1.2.4 does it with interpolation on:
//! only the braced forms `${NAME}` and `${NAME:-DEFAULT}`.
//!
//! References are found left to right, each search resuming after the previous reference. A
//! reference is `${`, then NAME (any characters but `}` and `:`, possibly none), then either `}`
//! or `:-`, DEFAULT (any characters but `}`) and `}`. A `${` that does not form one (`${A:x}`,
//! `${unclosed`) is kept as it is, and so is `$NAME`. NAME takes the latest value an earlier key
//! gave it, else the process environment's, else DEFAULT (or nothing). A set but empty value
//! wins over DEFAULT, unlike the shell's `:-`. DEFAULT and looked-up values are not expanded again.

/// Expands the references in `value`; `lookup` gives NAME's value, `None` when it is unset.
pub(super) fn expand<E>(value: &str, lookup: impl Fn(&str) -> Result<Option<String>, E>) -> Result<String, E> {
    let mut out = String::new();
    // `copied`: the end of what is in `out`; `search`: where the next `${` is looked for.
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = value[search..].find("${") {
        let start = search + found;
        match reference_at(value, start) {
            Some(Reference { name, default, end }) => {
                out.push_str(&value[copied..start]);
                out.push_str(&lookup(name)?.unwrap_or_else(|| default.unwrap_or_default().to_string()));
                copied = end;
                search = end;
            }
            None => search = start + 1,
        }
    }
    out.push_str(&value[copied..]);
    Ok(out)
}

struct Reference<'a> {
    name: &'a str,
    default: Option<&'a str>,
    /// Just past the closing `}`.
    end: usize,
}

/// The reference starting at `start` (where `value` has `${`), if one does.
fn reference_at(value: &str, start: usize) -> Option<Reference<'_>> {
    let name_start = start + 2;
    let name_end = name_start + value[name_start..].find(['}', ':'])?;
    let name = &value[name_start..name_end];
    let after = &value[name_end..];
    if after.starts_with('}') {
        return Some(Reference {
            name,
            default: None,
            end: name_end + 1,
        });
    }
    let default_start = name_end + after.strip_prefix(":-").map(|_| 2)?;
    let default_end = default_start + value[default_start..].find('}')?;
    Some(Reference {
        name,
        default: Some(&value[default_start..default_end]),
        end: default_end + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str) -> String {
        let lookup = |name: &str| -> Result<Option<String>, ()> {
            Ok(match name {
                "SET" => Some("v".into()),
                "EMPTY" => Some(String::new()),
                "" => Some("empty-name".into()),
                "A${B" => Some("odd".into()),
                _ => None,
            })
        };
        expand(value, lookup).unwrap_or_default()
    }

    #[test]
    fn braced_references_expand_others_stay() {
        assert_eq!(run("x${SET}y"), "xvy");
        assert_eq!(run("$SET ${SET"), "$SET ${SET");
        assert_eq!(run("${UNSET}|${UNSET:-d}|${EMPTY:-d}|${SET:-d}"), "|d||v");
        assert_eq!(run("${UNSET:-a:-b$c{d}e}"), "a:-b$c{de}");
        assert_eq!(run("${SET:x} ${SET:}"), "${SET:x} ${SET:}");
        assert_eq!(run("${}${:-z}"), "empty-nameempty-name");
        assert_eq!(run("${A${B}}"), "odd}");
        assert_eq!(run("$${SET}$"), "$v$");
        assert_eq!(run("${UNSET:-${SET}}"), "${SET}");
        assert_eq!(run("${=:-$}{SET}"), "${SET}");
        assert_eq!(run("é${SET}ü"), "évü");
    }
}
