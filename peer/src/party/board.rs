//! The ready board and the last-copy check, as pure functions of what the
//! directory knows of every peer (its games and its status) and of what we
//! have ourselves: no clock, no IO, so every state is a plain test.

use lanspread_proto::wire::PeerStatus;
use lanspread_proto::{GameSummary, PeerId, VersionId};

use crate::events::{BoardGame, BoardPeer, LastCopy, ReadyBoard, ReadyState};

/// One lineup game as the board shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardEntry {
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    pub at: Option<String>,
}

/// What the board needs of one peer (us included).
pub struct PeerFacts<'a> {
    pub peer_id: &'a PeerId,
    pub name: &'a str,
    pub us: bool,
    /// Complete games and downloads in progress (`complete: false`).
    pub games: &'a [GameSummary],
    pub status: Option<&'a PeerStatus>,
}

/// Where `peer` stands with `entry`, and how far a download of it is.
pub fn state_of(
    peer: &PeerFacts<'_>,
    entry: &BoardEntry,
) -> (ReadyState, Option<f64>, Option<u64>) {
    let status = peer.status;
    if status.is_some_and(|s| s.playing.contains(&entry.game_id)) {
        return (ReadyState::Playing, None, None);
    }
    let exact = peer.games.iter().find(|g| g.version_id == entry.version_id);
    if exact.is_some_and(|g| g.complete) {
        return (ReadyState::Ready, None, None);
    }
    let progress = status.and_then(|s| {
        s.downloads
            .iter()
            .find(|d| d.version_id == entry.version_id)
    });
    if exact.is_some() || progress.is_some() {
        let percent = progress.map_or(0.0, |d| f64::from(d.permille) / 10.0);
        let eta = progress.and_then(|d| d.eta_secs).map(u64::from);
        return (ReadyState::Downloading, Some(percent), eta);
    }
    let other = peer
        .games
        .iter()
        .any(|g| g.complete && g.game_id == entry.game_id);
    if other {
        (ReadyState::Outdated, None, None)
    } else {
        (ReadyState::Missing, None, None)
    }
}

/// The board of `entries` over `peers` (we are one of them): rows sorted
/// by name, us first.
pub fn board(
    publisher: Option<PeerId>,
    entries: &[BoardEntry],
    peers: &[PeerFacts<'_>],
) -> ReadyBoard {
    let mut order: Vec<&PeerFacts<'_>> = peers.iter().collect();
    order.sort_by(|a, b| {
        b.us.cmp(&a.us)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
            .then_with(|| a.peer_id.cmp(b.peer_id))
    });
    let games = entries
        .iter()
        .map(|entry| {
            let rows: Vec<BoardPeer> = order
                .iter()
                .map(|peer| {
                    let (state, percent, eta_secs) = state_of(peer, entry);
                    BoardPeer {
                        peer_id: peer.peer_id.clone(),
                        name: peer.name.to_owned(),
                        us: peer.us,
                        state,
                        percent,
                        eta_secs,
                    }
                })
                .collect();
            let ready = rows
                .iter()
                .filter(|r| matches!(r.state, ReadyState::Ready | ReadyState::Playing))
                .count() as u32;
            BoardGame {
                version_id: entry.version_id,
                game_id: entry.game_id.clone(),
                title: entry.title.clone(),
                at: entry.at.clone(),
                ready,
                peers: rows,
            }
        })
        .collect();
    ReadyBoard { publisher, games }
}

/// Our complete games that no other present peer has complete while some
/// fetch them: quitting would take the last copy away from them.
pub fn last_copies(ours: &[GameSummary], others: &[PeerFacts<'_>]) -> Vec<LastCopy> {
    ours.iter()
        .filter(|game| game.complete)
        .filter_map(|game| {
            let complete_elsewhere = others.iter().any(|p| {
                p.games
                    .iter()
                    .any(|g| g.version_id == game.version_id && g.complete)
            });
            if complete_elsewhere {
                return None;
            }
            let fetching = others
                .iter()
                .filter(|p| {
                    let listed = p
                        .games
                        .iter()
                        .any(|g| g.version_id == game.version_id && !g.complete);
                    let told = p.status.is_some_and(|s| {
                        s.downloads.iter().any(|d| d.version_id == game.version_id)
                    });
                    listed || told
                })
                .count() as u32;
            (fetching > 0).then(|| LastCopy {
                version_id: game.version_id,
                game_id: game.game_id.clone(),
                title: game.title.clone(),
                fetching,
            })
        })
        .collect()
}

/// A download's progress as a status tells it: in steps of
/// [`lanspread_proto::wire::STATUS_PERMILLE_STEP`], so small moves are not
/// news for the whole party.
pub fn status_permille(bytes_done: u64, bytes_total: u64) -> u16 {
    use lanspread_proto::wire::STATUS_PERMILLE_STEP;
    if bytes_total == 0 {
        return 0;
    }
    let permille =
        (u128::from(bytes_done.min(bytes_total)) * 1000 / u128::from(bytes_total)) as u16;
    permille / STATUS_PERMILLE_STEP * STATUS_PERMILLE_STEP
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread_proto::wire::DownloadStatus;
    use lanspread_proto::Hash;

    fn game(game_id: &str, version: u8, complete: bool) -> GameSummary {
        GameSummary {
            game_id: game_id.into(),
            version_id: Hash([version; 32]),
            title: game_id.to_uppercase(),
            description: None,
            genre: None,
            min_players: None,
            max_players: None,
            version_label: None,
            total_size: 1000,
            n_files: 1,
            thumbnail: None,
            complete,
        }
    }

    fn entry(game_id: &str, version: u8) -> BoardEntry {
        BoardEntry {
            version_id: Hash([version; 32]),
            game_id: game_id.into(),
            title: game_id.to_uppercase(),
            at: None,
        }
    }

    fn ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| {
                crate::net::identity::Identity::ephemeral()
                    .peer_id()
                    .clone()
            })
            .collect()
    }

    fn check(games: &[GameSummary], status: Option<&PeerStatus>, expected: ReadyState) {
        let id = &ids(1)[0];
        let peer = PeerFacts {
            peer_id: id,
            name: "p",
            us: false,
            games,
            status,
        };
        assert_eq!(
            state_of(&peer, &entry("q3", 2)).0,
            expected,
            "{games:?} {status:?}"
        );
    }

    #[test]
    fn each_state_from_games_and_status() {
        let playing = PeerStatus {
            playing: vec!["q3".into()],
            ..PeerStatus::default()
        };
        let fetching = PeerStatus {
            downloads: vec![DownloadStatus {
                version_id: Hash([2; 32]),
                permille: 450,
                eta_secs: Some(12),
            }],
            ..PeerStatus::default()
        };
        check(&[game("q3", 2, true)], None, ReadyState::Ready);
        check(&[game("q3", 1, true)], None, ReadyState::Outdated);
        check(&[], None, ReadyState::Missing);
        check(&[game("ut", 7, true)], None, ReadyState::Missing);
        // Listed as a partial source, or told by its status (queued,
        // nothing to serve yet).
        check(&[game("q3", 2, false)], None, ReadyState::Downloading);
        check(
            &[game("q3", 1, true)],
            Some(&fetching),
            ReadyState::Downloading,
        );
        // An older copy being played still counts as in the game.
        check(&[game("q3", 1, true)], Some(&playing), ReadyState::Playing);
        check(&[game("q3", 2, true)], Some(&playing), ReadyState::Playing);
    }

    #[test]
    fn the_board_counts_ready_and_playing_and_shows_progress() {
        let ids = ids(3);
        let fetching = PeerStatus {
            downloads: vec![DownloadStatus {
                version_id: Hash([2; 32]),
                permille: 450,
                eta_secs: Some(12),
            }],
            ..PeerStatus::default()
        };
        let playing = PeerStatus {
            playing: vec!["q3".into()],
            ..PeerStatus::default()
        };
        let ready = [game("q3", 2, true)];
        let partial = [game("q3", 2, false)];
        let peers = [
            PeerFacts {
                peer_id: &ids[0],
                name: "zed",
                us: false,
                games: &ready,
                status: Some(&playing),
            },
            PeerFacts {
                peer_id: &ids[1],
                name: "Amy",
                us: false,
                games: &partial,
                status: Some(&fetching),
            },
            PeerFacts {
                peer_id: &ids[2],
                name: "me",
                us: true,
                games: &ready,
                status: None,
            },
        ];
        let board = board(None, &[entry("q3", 2), entry("ut", 9)], &peers);
        let q3 = &board.games[0];
        assert_eq!(q3.ready, 2);
        let names: Vec<&str> = q3.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["me", "Amy", "zed"]);
        assert_eq!(q3.peers[1].state, ReadyState::Downloading);
        assert_eq!(q3.peers[1].percent, Some(45.0));
        assert_eq!(q3.peers[1].eta_secs, Some(12));
        assert_eq!(q3.peers[2].state, ReadyState::Playing);
        assert_eq!(board.games[1].ready, 0);
        assert!(board.games[1]
            .peers
            .iter()
            .all(|p| p.state == ReadyState::Missing));
    }

    #[test]
    fn a_last_copy_is_one_nobody_else_has_while_someone_fetches_it() {
        let ids = ids(3);
        let ours = [
            game("q3", 2, true),
            game("ut", 3, true),
            game("cs", 4, true),
        ];
        let fetching_q3 = [game("q3", 2, false)];
        let both_ut = [game("ut", 3, false)];
        let complete_ut = [game("ut", 3, true)];
        let told = PeerStatus {
            downloads: vec![DownloadStatus {
                version_id: Hash([2; 32]),
                permille: 0,
                eta_secs: None,
            }],
            ..PeerStatus::default()
        };
        let others = [
            PeerFacts {
                peer_id: &ids[0],
                name: "a",
                us: false,
                games: &fetching_q3,
                status: None,
            },
            // Queued: nothing listed yet, its status says it fetches q3.
            PeerFacts {
                peer_id: &ids[1],
                name: "b",
                us: false,
                games: &both_ut,
                status: Some(&told),
            },
            PeerFacts {
                peer_id: &ids[2],
                name: "c",
                us: false,
                games: &complete_ut,
                status: None,
            },
        ];
        let last = last_copies(&ours, &others);
        assert_eq!(last.len(), 1, "{last:?}");
        assert_eq!(last[0].game_id, "q3");
        assert_eq!(last[0].fetching, 2);
    }

    #[test]
    fn status_progress_moves_in_steps() {
        assert_eq!(status_permille(0, 0), 0);
        assert_eq!(status_permille(49, 1000), 0);
        assert_eq!(status_permille(50, 1000), 50);
        assert_eq!(status_permille(999, 1000), 950);
        assert_eq!(status_permille(1000, 1000), 1000);
        assert_eq!(status_permille(u64::MAX, u64::MAX), 1000);
    }
}
