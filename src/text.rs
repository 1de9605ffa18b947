//! Plain text for people: the paragraphs `init`, `dns` and `doctor` print,
//! and the comments of the files `init` writes.

/// `text` wrapped at `width` columns (characters, not bytes), the first
/// line starting with `first`, the others with `rest`. Words longer than a
/// line stay whole: they may be values to copy.
pub fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_by_characters_and_keeps_long_words_whole() {
        assert_eq!(wrap("aa bb cc", "# ", "# ", 7), "# aa bb\n# cc\n");
        assert_eq!(wrap("éé éé", "", "  ", 5), "éé éé\n");
        assert_eq!(wrap("x v=DKIM1;k=rsa;p=MIIB", "1. ", "   ", 10), "1. x\n   v=DKIM1;k=rsa;p=MIIB\n");
        assert_eq!(wrap("", "- ", "  ", 10), "-\n");
    }
}
