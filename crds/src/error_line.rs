//! A binary's last words: an error and its causes as one line, each cause named once.
//!
//! Many errors (kube's among them) repeat their source's text in their own, so a plain chain
//! prints the same cause several times, and some causes have no text at all. [`error_line`]
//! keeps only the causes whose text the line does not already hold.

use std::error::Error;

/// `error` and every cause not already in its text, joined by `: `, on one line.
pub fn error_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        let text = text.trim();
        if !text.is_empty() && !line.contains(text) {
            line.push_str(": ");
            line.push_str(text);
        }
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |inner, text| Some(Layer(text, inner.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn distinct_causes_are_joined_in_order() {
        let error = chain(&["starting", "reading /x", "No such file"]);
        assert_eq!(error_line(&error), "starting: reading /x: No such file");
    }

    #[test]
    fn a_cause_the_line_already_holds_is_named_once() {
        let error = chain(&[
            "no client",
            "infer: kubeconfig: (read /x: No such file)",
            "read /x: No such file",
            "No such file",
        ]);
        assert_eq!(
            error_line(&error),
            "no client: infer: kubeconfig: (read /x: No such file)"
        );
    }

    #[test]
    fn an_empty_cause_is_left_out_and_newlines_become_spaces() {
        let error = chain(&["stopped", "", "bad\n  value"]);
        assert_eq!(error_line(&error), "stopped: bad value");
    }

    #[test]
    fn an_error_without_causes_is_its_own_text() {
        assert_eq!(error_line(&chain(&["alone"])), "alone");
    }
}
