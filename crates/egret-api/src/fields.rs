//! The declared field names of a stream.

use std::fmt;

/// Ordered field names of a stream, as declared by the component that emits it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Fields(Vec<String>);

impl Fields {
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Fields(names.into_iter().map(Into::into).collect())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|f| f == name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for Fields {
    fn from(names: [S; N]) -> Self {
        Fields::new(names)
    }
}

impl From<Vec<String>> for Fields {
    fn from(names: Vec<String>) -> Self {
        Fields(names)
    }
}

impl From<&[&str]> for Fields {
    fn from(names: &[&str]) -> Self {
        Fields::new(names.iter().copied())
    }
}
