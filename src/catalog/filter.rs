//! Which tools a server offers.
//!
//! Every offered tool costs the model context and widens what a prompt injection can reach,
//! so users narrow the catalog by provider (`github`), provider toolset (`slack:chat`), tool
//! name, or to read-only tools. A misspelled name must fail loudly: silently offering nothing
//! (or everything) is worse than an error.

use crate::error::{Error, Result};

use super::manifest::{ProviderSpec, ToolSpec};
use super::Catalog;

/// A selection of tools. Empty `toolsets` and `tools` select everything; a tool is offered when
/// either list names it (its provider, its `provider:toolset`, or its own name) and, with
/// `read_only`, only if it is read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFilter {
    /// `github` (a whole provider) or `slack:chat` (one toolset of a provider).
    pub toolsets: Vec<String>,
    /// Tool names, e.g. `github_get_issue`.
    pub tools: Vec<String>,
    pub read_only: bool,
}

impl ToolFilter {
    pub fn allows(&self, provider: &ProviderSpec, tool: &ToolSpec) -> bool {
        if self.read_only && !tool.read_only {
            return false;
        }
        if self.toolsets.is_empty() && self.tools.is_empty() {
            return true;
        }
        self.tools.contains(&tool.name)
            || self
                .toolsets
                .iter()
                .any(|entry| match entry.split_once(':') {
                    Some((p, set)) => p == provider.name && set == tool.toolset,
                    None => *entry == provider.name,
                })
    }

    /// Fail on names the catalog does not know, listing the valid ones.
    pub fn validate(&self, catalog: &Catalog) -> Result<()> {
        let known_toolsets = catalog.toolset_names();
        let unknown_toolsets: Vec<&str> = self
            .toolsets
            .iter()
            .filter(|t| !known_toolsets.contains(t))
            .map(String::as_str)
            .collect();
        if !unknown_toolsets.is_empty() {
            return Err(Error::usage(format!(
                "unknown toolset {}; valid toolsets: {}",
                backticked(&unknown_toolsets),
                known_toolsets.join(", ")
            )));
        }
        let unknown_tools: Vec<&str> = self
            .tools
            .iter()
            .filter(|name| catalog.tool(name).is_none())
            .map(String::as_str)
            .collect();
        if !unknown_tools.is_empty() {
            let known: Vec<&str> = catalog.tools().map(|(_, t)| t.name.as_str()).collect();
            return Err(Error::usage(format!(
                "unknown tool {}; valid tools: {}",
                backticked(&unknown_tools),
                known.join(", ")
            )));
        }
        Ok(())
    }
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(filter: &ToolFilter) -> Vec<String> {
        let catalog = Catalog::embedded();
        catalog
            .tools()
            .filter(|(p, t)| filter.allows(p, t))
            .map(|(_, t)| t.name.clone())
            .collect()
    }

    #[test]
    fn empty_filter_selects_everything() {
        let all = selected(&ToolFilter::default());
        assert_eq!(all.len(), Catalog::embedded().tools().count());
        assert!(all.contains(&"slack_post_message".to_string()));
    }

    #[test]
    fn provider_toolset_tool_and_read_only_narrow_the_selection() {
        let slack_chat = ToolFilter {
            toolsets: vec!["slack:chat".into()],
            ..Default::default()
        };
        assert_eq!(
            selected(&slack_chat),
            vec![
                "slack_post_message",
                "slack_add_reaction",
                "slack_open_dm",
                "slack_get_permalink"
            ]
        );

        let github = selected(&ToolFilter {
            toolsets: vec!["github".into()],
            ..Default::default()
        });
        assert!(
            github.iter().all(|name| name.starts_with("github_")),
            "{github:?}"
        );
        assert!(github.contains(&"github_create_issue".to_string()));

        let mixed = ToolFilter {
            toolsets: vec!["google:freebusy".into()],
            tools: vec!["github_get_me".into()],
            read_only: false,
        };
        assert_eq!(
            selected(&mixed),
            vec!["github_get_me", "calendar_find_free_busy"]
        );

        let read_only = selected(&ToolFilter {
            toolsets: vec!["github".into()],
            read_only: true,
            ..Default::default()
        });
        assert!(read_only.contains(&"github_get_issue".to_string()));
        assert!(!read_only.contains(&"github_create_issue".to_string()));
        assert!(!read_only.contains(&"github_add_issue_comment".to_string()));

        let everything_read_only = selected(&ToolFilter {
            read_only: true,
            ..Default::default()
        });
        assert!(!everything_read_only.contains(&"calendar_delete_event".to_string()));
        assert!(everything_read_only.contains(&"calendar_find_free_busy".to_string()));
    }

    #[test]
    fn unknown_names_are_errors_listing_valid_ones() {
        let catalog = Catalog::embedded();
        let typo = ToolFilter {
            toolsets: vec!["gihub".into()],
            ..Default::default()
        };
        let message = typo.validate(&catalog).unwrap_err().to_string();
        assert!(message.contains("`gihub`"), "{message}");
        assert!(
            message.contains("github, github:actions, github:issues"),
            "{message}"
        );
        assert!(message.contains("slack:chat"), "{message}");

        let typo = ToolFilter {
            tools: vec!["github_get_mee".into()],
            ..Default::default()
        };
        let message = typo.validate(&catalog).unwrap_err().to_string();
        assert!(
            message.contains("`github_get_mee`") && message.contains("github_get_me,"),
            "{message}"
        );

        let fine = ToolFilter {
            toolsets: vec!["slack".into(), "github:pull_requests".into()],
            tools: vec!["calendar_get_event".into()],
            read_only: true,
        };
        fine.validate(&catalog).unwrap();
    }
}
