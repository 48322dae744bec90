//! The LAN catalog: every peer's library merged by version id. Pure.

use std::collections::{BTreeMap, BTreeSet};

use lanspread_proto::{wire, GameSummary, PeerId, VersionId};

use crate::events::{CatalogEntry, NameConflict};
use crate::library::LibrarySnapshot;

/// Whose summary describes a version, best first: our own install, then a
/// peer that has all of it, then a downloader (which knows the game only
/// from what it was told). Within a rank the first one seen wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Describer {
    Installed,
    Complete,
    Partial,
}

fn entry_of(summary: &GameSummary) -> CatalogEntry {
    CatalogEntry {
        game_id: summary.game_id.clone(),
        version_id: summary.version_id,
        title: summary.title.clone(),
        description: summary.description.clone(),
        genre: summary.genre.clone(),
        min_players: summary.min_players,
        max_players: summary.max_players,
        version_label: summary.version_label.clone(),
        total_size: summary.total_size,
        thumbnail: summary.thumbnail,
        sources: Vec::new(),
        partial_sources: Vec::new(),
        installed: false,
        update_to: None,
        conflict: None,
        refused: None,
        notes: Vec::new(),
    }
}

/// One version being merged: its entry, who described it, and every game
/// id and title its describers (installed copy and complete sources) gave.
struct Merged {
    entry: CatalogEntry,
    described_by: Describer,
    game_ids: BTreeSet<String>,
    titles: BTreeSet<String>,
}

/// A listing accepted into the catalog: text cut to the limits
/// (`GameSummary::cut_to_limits`), with the cuts said in words.
fn accepted(summary: &GameSummary) -> (GameSummary, Vec<String>) {
    let mut summary = summary.clone();
    let notes = summary
        .cut_to_limits()
        .into_iter()
        .map(|field| {
            let max = match field {
                "title" => wire::MAX_TITLE_BYTES,
                "description" => wire::MAX_DESCRIPTION_BYTES,
                _ => wire::MAX_LABEL_BYTES,
            };
            format!("{field} cut to {max} bytes")
        })
        .collect();
    (summary, notes)
}

/// Merge the local library and every connected peer's games. A version's
/// title, picture and the rest come from the best describer (see
/// [`Describer`]): a partial source never renames a game or drops its cover.
/// Describers that disagree on the game id or title are shown as a
/// [`NameConflict`]. A listing whose game id is not a plain folder name (or
/// that is over a limit) never describes a version; a version only such
/// listings name is shown with `refused` saying why.
pub fn build_catalog<'a>(
    local: &LibrarySnapshot,
    remotes: impl IntoIterator<Item = (&'a PeerId, &'a [GameSummary])>,
) -> Vec<CatalogEntry> {
    let mut by_version: BTreeMap<VersionId, Merged> = BTreeMap::new();
    let mut refused: BTreeMap<VersionId, CatalogEntry> = BTreeMap::new();
    let mut add = |summary: &GameSummary, source: Option<&PeerId>| {
        let (summary, notes) = accepted(summary);
        if let (Some(peer), Err(e)) = (source, summary.check()) {
            let entry = refused
                .entry(summary.version_id)
                .or_insert_with(|| CatalogEntry {
                    refused: Some(e.to_string()),
                    notes: notes.clone(),
                    ..entry_of(&summary)
                });
            if !entry.sources.contains(peer) {
                entry.sources.push(peer.clone());
            }
            return;
        }
        let describer = match (source, summary.complete) {
            (None, _) => Describer::Installed,
            (Some(_), true) => Describer::Complete,
            (Some(_), false) => Describer::Partial,
        };
        let merged = by_version
            .entry(summary.version_id)
            .or_insert_with(|| Merged {
                entry: CatalogEntry {
                    notes: notes.clone(),
                    ..entry_of(&summary)
                },
                described_by: describer,
                game_ids: BTreeSet::new(),
                titles: BTreeSet::new(),
            });
        if describer != Describer::Partial {
            merged.game_ids.insert(summary.game_id.clone());
            merged.titles.insert(summary.title.clone());
        }
        let entry = &mut merged.entry;
        if describer < merged.described_by {
            *entry = CatalogEntry {
                sources: std::mem::take(&mut entry.sources),
                partial_sources: std::mem::take(&mut entry.partial_sources),
                installed: entry.installed,
                notes,
                ..entry_of(&summary)
            };
            merged.described_by = describer;
        }
        match source {
            None => entry.installed = true,
            Some(peer) => {
                let list = if summary.complete {
                    &mut entry.sources
                } else {
                    &mut entry.partial_sources
                };
                if !list.contains(peer) {
                    list.push(peer.clone());
                }
            }
        }
    };
    for game in local.values() {
        add(&game.summary(), None);
    }
    for (peer, games) in remotes {
        for game in games {
            add(game, Some(peer));
        }
    }
    let mut entries: Vec<CatalogEntry> = Vec::with_capacity(by_version.len());
    for (vid, merged) in by_version {
        refused.remove(&vid);
        let mut entry = merged.entry;
        if merged.game_ids.len() > 1 || merged.titles.len() > 1 {
            entry.conflict = Some(NameConflict {
                game_ids: merged.game_ids.into_iter().collect(),
                titles: merged.titles.into_iter().collect(),
            });
        }
        entries.push(entry);
    }
    entries.extend(refused.into_values());
    for entry in &mut entries {
        entry.sources.sort();
        entry.partial_sources.sort();
    }
    mark_updates(&mut entries);
    entries.sort_by(|a, b| {
        a.title
            .to_lowercase()
            .cmp(&b.title.to_lowercase())
            .then(a.version_id.cmp(&b.version_id))
    });
    entries
}

/// Whether the sources of `entry` disagree on its game id.
pub fn ids_disagree(entry: &CatalogEntry) -> bool {
    entry
        .conflict
        .as_ref()
        .is_some_and(|c| c.game_ids.len() > 1)
}

/// On each installed entry, the newest other version of its game that some
/// peer serves, if it is newer than ours.
fn mark_updates(entries: &mut [CatalogEntry]) {
    let updates: Vec<Option<VersionId>> = entries
        .iter()
        .map(|mine| {
            if !mine.installed {
                return None;
            }
            entries
                .iter()
                .filter(|other| {
                    other.game_id == mine.game_id
                        && other.version_id != mine.version_id
                        && !other.sources.is_empty()
                        && other.refused.is_none()
                        && !ids_disagree(other)
                })
                .reduce(|best, other| if is_newer(other, best) { other } else { best })
                .filter(|newest| is_newer(newest, mine))
                .map(|newest| newest.version_id)
        })
        .collect();
    for (entry, update) in entries.iter_mut().zip(updates) {
        entry.update_to = update;
    }
}

/// Newest by version label (numeric parts compared as numbers), else by
/// number of sources.
fn is_newer(a: &CatalogEntry, b: &CatalogEntry) -> bool {
    match (&a.version_label, &b.version_label) {
        (Some(x), Some(y)) if x != y => version_key(x) > version_key(y),
        _ => a.sources.len() > b.sources.len(),
    }
}

fn version_key(label: &str) -> Vec<(u64, String)> {
    label
        .split(|c: char| c == '.' || c == '-' || c == '_' || c.is_whitespace())
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse().unwrap_or(0), part[digits.len()..].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::Identity;
    use lanspread_proto::Hash;

    fn summary(game: &str, version: u8, label: Option<&str>) -> GameSummary {
        GameSummary {
            game_id: game.into(),
            version_id: Hash([version; 32]),
            title: game.to_uppercase(),
            description: None,
            genre: None,
            min_players: None,
            max_players: None,
            version_label: label.map(str::to_owned),
            total_size: 10,
            n_files: 1,
            thumbnail: None,
            complete: true,
        }
    }

    #[test]
    fn merges_sources_by_version() {
        let (a, b) = (Identity::ephemeral(), Identity::ephemeral());
        let a_games = [summary("q3", 1, None), summary("ut", 2, None)];
        let b_games = [summary("q3", 1, None)];
        let catalog = build_catalog(
            &LibrarySnapshot::new(),
            [(a.peer_id(), &a_games[..]), (b.peer_id(), &b_games[..])],
        );
        assert_eq!(catalog.len(), 2);
        assert_eq!(catalog[0].game_id, "q3");
        assert_eq!(catalog[0].sources.len(), 2);
        assert_eq!(catalog[1].sources, vec![a.peer_id().clone()]);
        assert!(catalog
            .iter()
            .all(|e| !e.installed && e.update_to.is_none()));
    }

    fn local(game: &str, version: u8, label: Option<&str>) -> LibrarySnapshot {
        use crate::library::metadata::GameMetadata;
        let manifest = lanspread_proto::Manifest {
            piece_size: 1 << 20,
            files: vec![],
            empty_dirs: vec![],
            pieces: vec![],
        };
        let game_entry = crate::library::LocalGame {
            id: game.into(),
            root: std::path::PathBuf::from(game),
            metadata: GameMetadata {
                title: game.to_uppercase(),
                version: label.map(str::to_owned),
                ..GameMetadata::default()
            },
            manifest: std::sync::Arc::new(manifest),
            version_id: Hash([version; 32]),
            total_size: 10,
            thumbnail: None,
            identities: None,
        };
        [(game.to_owned(), std::sync::Arc::new(game_entry))].into()
    }

    #[test]
    fn an_installed_game_learns_of_a_newer_version() {
        let a = Identity::ephemeral();
        let newer = [
            summary("q3", 2, Some("1.32")),
            summary("q3", 3, Some("1.16")),
        ];
        let catalog = build_catalog(&local("q3", 1, Some("1.17")), [(a.peer_id(), &newer[..])]);
        let installed = catalog.iter().find(|e| e.installed).unwrap();
        assert_eq!(installed.update_to, Some(Hash([2; 32])));
        assert!(catalog
            .iter()
            .filter(|e| !e.installed)
            .all(|e| e.update_to.is_none()));

        // Nothing newer than ours on the LAN: no update.
        let older = [summary("q3", 3, Some("1.16"))];
        let catalog = build_catalog(&local("q3", 1, Some("1.17")), [(a.peer_id(), &older[..])]);
        assert!(catalog.iter().all(|e| e.update_to.is_none()));

        // Without labels, the version with the most sources wins.
        let unlabeled = [summary("q3", 4, None)];
        let catalog = build_catalog(&local("q3", 1, None), [(a.peer_id(), &unlabeled[..])]);
        assert_eq!(
            catalog.iter().find(|e| e.installed).unwrap().update_to,
            Some(Hash([4; 32]))
        );
    }

    /// Pins issue 13: a version's game id and title came from whichever
    /// listing peer described it first; sources that disagree are shown.
    #[test]
    fn sources_that_disagree_on_a_name_are_shown_not_merged() {
        let (a, b) = (Identity::ephemeral(), Identity::ephemeral());
        let honest = [summary("q3", 1, None)];
        let liar = [GameSummary {
            title: "Free Money".into(),
            ..summary("saves", 1, None)
        }];
        let catalog = build_catalog(
            &LibrarySnapshot::new(),
            [(a.peer_id(), &honest[..]), (b.peer_id(), &liar[..])],
        );
        assert_eq!(catalog.len(), 1);
        let conflict = catalog[0].conflict.clone().expect("a conflict");
        assert_eq!(conflict.game_ids, vec!["q3".to_owned(), "saves".to_owned()]);
        assert_eq!(
            conflict.titles,
            vec!["Free Money".to_owned(), "Q3".to_owned()]
        );
        assert!(ids_disagree(&catalog[0]));
        // Agreeing sources: no conflict.
        let catalog = build_catalog(
            &LibrarySnapshot::new(),
            [(a.peer_id(), &honest[..]), (b.peer_id(), &honest[..])],
        );
        assert_eq!(catalog[0].conflict, None);
    }

    /// Pins issue 13: a game id that is a path was taken as a folder name.
    #[test]
    fn a_listing_whose_id_is_a_path_is_refused_with_a_reason() {
        let a = Identity::ephemeral();
        let games = [summary("../escaped", 1, None), summary("ok", 2, None)];
        let catalog = build_catalog(&LibrarySnapshot::new(), [(a.peer_id(), &games[..])]);
        let refused = catalog.iter().find(|e| e.game_id == "../escaped").unwrap();
        let reason = refused.refused.as_deref().unwrap();
        assert!(
            reason.starts_with("game id `../escaped` is not a plain folder name"),
            "{reason}"
        );
        assert_eq!(
            catalog.iter().find(|e| e.game_id == "ok").unwrap().refused,
            None
        );
        // The same version also listed under a good id: that one describes it.
        let b = Identity::ephemeral();
        let good = [summary("fine", 1, None)];
        let catalog = build_catalog(
            &LibrarySnapshot::new(),
            [(a.peer_id(), &games[..1]), (b.peer_id(), &good[..])],
        );
        assert_eq!(catalog.len(), 1);
        assert_eq!(catalog[0].game_id, "fine");
        assert_eq!(catalog[0].refused, None);
        assert_eq!(catalog[0].sources, vec![b.peer_id().clone()]);
    }

    #[test]
    fn long_text_is_cut_and_said() {
        let a = Identity::ephemeral();
        let games = [GameSummary {
            description: Some("d".repeat(wire::MAX_DESCRIPTION_BYTES + 1)),
            ..summary("q3", 1, None)
        }];
        let catalog = build_catalog(&LibrarySnapshot::new(), [(a.peer_id(), &games[..])]);
        assert_eq!(
            catalog[0].description.as_ref().map(String::len),
            Some(wire::MAX_DESCRIPTION_BYTES)
        );
        assert_eq!(
            catalog[0].notes,
            vec!["description cut to 8192 bytes".to_owned()]
        );
    }

    #[test]
    fn version_labels_compare_numerically() {
        assert!(version_key("1.10") > version_key("1.9"));
        assert!(version_key("2.0.1") > version_key("2.0"));
        assert!(version_key("1.2-beta") > version_key("1.1"));
    }

    /// Pins a bug: the catalog took a version's title and picture from the
    /// listing peer with the lowest peer id, so a peer still downloading a
    /// game (which then knew it only by its folder name, without a cover)
    /// renamed it and dropped its picture for everyone.
    #[test]
    fn a_partial_source_with_a_lower_peer_id_changes_nothing_a_downloader_sees() {
        let mut ids = [Identity::ephemeral(), Identity::ephemeral()];
        ids.sort_by(|a, b| a.peer_id().cmp(b.peer_id()));
        let [partial_peer, host] = ids;
        let hosted = GameSummary {
            title: "Quake III Arena".into(),
            thumbnail: Some(Hash([9; 32])),
            version_label: Some("1.32".into()),
            ..summary("q3", 1, None)
        };
        let partial = GameSummary {
            title: "q3".into(),
            thumbnail: None,
            complete: false,
            ..summary("q3", 1, None)
        };
        let alone = build_catalog(
            &LibrarySnapshot::new(),
            [(host.peer_id(), &[hosted.clone()][..])],
        );
        let with_partial = build_catalog(
            &LibrarySnapshot::new(),
            [
                (partial_peer.peer_id(), &[partial][..]),
                (host.peer_id(), &[hosted][..]),
            ],
        );
        assert_eq!(with_partial.len(), 1);
        let entry = &with_partial[0];
        assert_eq!(entry.title, "Quake III Arena");
        assert_eq!(entry.thumbnail, Some(Hash([9; 32])));
        assert_eq!(entry.partial_sources, vec![partial_peer.peer_id().clone()]);
        assert_eq!(
            CatalogEntry {
                partial_sources: Vec::new(),
                ..entry.clone()
            },
            alone[0]
        );
    }
}
