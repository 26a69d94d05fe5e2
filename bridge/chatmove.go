package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/phonebridge/phonebridge/config"
)

// ChatMove says one of a connector's chats, or one of its people, is now
// known by another id: what was recorded under From belongs under To.
type ChatMove struct{ From, To string }

// ChatMoveSource is a connector whose chats may have been recorded under
// ids it no longer uses (WhatsApp people recorded by LID whose id is now
// their number). Before any connector starts, the core asks for the moves
// and rewrites everything kept under the old ids in one transaction.
// While it runs, its Sink is a ChatMoveSink for the moves it finds then.
type ChatMoveSource interface {
	// ChatMoves returns the moves to make now. seen lists the ids the core
	// and the connectors mirroring this one's chats have recorded for its
	// chats and senders; it reads the message map, so call it only when
	// there may be something to move.
	ChatMoves(ctx context.Context, seen func() ([]string, error)) ([]ChatMove, error)
}

// ChatMover is a connector that keeps rows under chat ids of origin (its
// own, or those of a connector it mirrors with `chats: all`). MoveChats
// rewrites them in tx; reports are lines for the operator, as when one
// person had two rooms that cannot be merged. It may run more than once
// (see Store.Write) and must not act outside tx. It runs before the
// connectors start, or while they run (ChatMoveSink): what it keeps in
// memory of the moved chats it updates when told (ChatsMovedWatcher).
type ChatMover interface {
	MoveChats(tx *Tx, origin string, moves []ChatMove) (reports []string, err error)
}

// ChatMoveSink is the Sink the core hands a ChatMoveSource: it makes
// moves while the bridge runs, as when a person seen as two chats turns
// out to be one (WhatsApp telling the pair of a number and a LID).
type ChatMoveSink interface {
	// MoveChatsNow rewrites what is kept under each move's From, as the
	// start-time moves do, without a restart: deliveries to the moved
	// chats (on the connector and its mirrors) pause after their send in
	// flight, the move commits, ChatsMovedWatchers are told, and the
	// chats' queues start again from the outbox, where rows queued under
	// From wait under To; the operator gets the movers' reports. On error
	// nothing moved and delivery goes on as before.
	MoveChatsNow(ctx context.Context, moves []ChatMove) error
}

// ChatsMovedWatcher is a connector keeping in memory something of the
// chats of origin (its own, or those it mirrors) that MoveChatsNow moved:
// told after the move committed and before delivery to them goes on.
// It must not block.
type ChatsMovedWatcher interface {
	ChatsMoved(origin string, moves []ChatMove)
}

var _ ChatMoveSink = sink{}

// MoveChatsNow implements ChatMoveSink.
func (s sink) MoveChatsNow(ctx context.Context, moves []ChatMove) error {
	return s.b.moveChatsNow(ctx, s.name, moves)
}

// moveChats asks every ChatMoveSource for its moves and makes them. It
// returns what the operator is to be told once delivery runs.
func (b *Bridge) moveChats(ctx context.Context) (notices []movedNotice, err error) {
	cs := b.conns()
	for _, name := range cs.names {
		src, ok := cs.conns[name].(ChatMoveSource)
		if !ok {
			continue
		}
		peers := b.mirrorPeers(name)
		moves, err := src.ChatMoves(ctx, func() ([]string, error) { return seenChats(ctx, b.store, name, peers) })
		if err != nil {
			return nil, fmt.Errorf("connector %s: find chats recorded under old ids: %w", name, err)
		}
		if len(moves) == 0 {
			continue
		}
		reports, err := b.moveTx(ctx, cs, name, peers, moves)
		if err != nil {
			return nil, err
		}
		for _, r := range reports {
			notices = append(notices, movedNotice{name, r})
		}
	}
	return notices, nil
}

// moveTx makes origin's moves in the core's tables and every mover's, in
// one transaction, and returns the movers' reports.
func (b *Bridge) moveTx(ctx context.Context, cs *connSet, origin string, peers []string, moves []ChatMove) (reports []string, err error) {
	err = b.store.Write(ctx, func(tx *Tx) error {
		reports = nil
		if err := moveCoreChats(tx, origin, peers, moves); err != nil {
			return err
		}
		for _, c := range append([]string{origin}, peers...) {
			m, ok := cs.conns[c].(ChatMover)
			if !ok {
				continue
			}
			r, err := m.MoveChats(tx, origin, moves)
			if err != nil {
				return fmt.Errorf("connector %s: %w", c, err)
			}
			reports = append(reports, r...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("connector %s: move chats to their new ids: %w", origin, err)
	}
	b.log.Info("moved chats recorded under old ids", "connector", origin, "moves", len(moves))
	return reports, nil
}

// moveChatsNow makes origin's moves while delivery runs (ChatMoveSink).
// Queues of the moved chats, on origin and on its mirrors, are held
// first: a worker holds rows of its chat in memory and records what it
// sends under its chat, so one still running on From after the move
// would send to the old chat and leave ids under it, while To's would
// read the moved rows again. Other chats' queues go on: their rows keep
// their destination, and one sent during the move goes out as it was
// accepted, as if just before.
func (b *Bridge) moveChatsNow(ctx context.Context, origin string, moves []ChatMove) error {
	if len(moves) == 0 {
		return nil
	}
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	cs := b.conns()
	peers := b.mirrorPeers(origin)
	conns := append([]string{origin}, peers...)
	var dests []Endpoint
	for _, c := range conns {
		for _, m := range moves {
			dests = append(dests, Endpoint{c, m.From}, Endpoint{c, m.To})
		}
	}
	if err := b.del.hold(ctx, dests); err != nil {
		return fmt.Errorf("pause deliveries to the chats to move: %w", err)
	}
	// The held workers' records commit before the move, so it moves
	// what they delivered and leaves what they did not in the outbox.
	// Waited for past ctx: a write given up on may still commit, and the
	// queues must not go on as before a move that committed.
	wctx := context.WithoutCancel(ctx)
	if err := b.store.Write(wctx, func(*Tx) error { return nil }); err != nil {
		b.del.release(dests, false)
		return fmt.Errorf("record deliveries before a move: %w", err)
	}
	reports, err := b.moveTx(wctx, cs, origin, peers, moves)
	if err != nil {
		b.del.release(dests, false)
		return err
	}
	for _, c := range conns {
		if w, ok := cs.conns[c].(ChatsMovedWatcher); ok {
			w.ChatsMoved(origin, moves)
		}
	}
	b.del.release(dests, true)
	for _, r := range reports {
		b.notice(origin, r)
	}
	return nil
}

type movedNotice struct{ from, text string }

// mirrorPeers are the connectors that share a `chats: all` route with
// name's `chats: all` endpoint: they key chats by name's chat ids (a
// portal per WhatsApp chat) and send theirs back under the same ids.
func (b *Bridge) mirrorPeers(name string) []string {
	b.resolveMu.Lock()
	routes := b.routes
	b.resolveMu.Unlock()
	var peers []string
	for _, r := range routes {
		mirrored := slices.ContainsFunc(r.Endpoints, func(ep config.Endpoint) bool {
			return ep.Connector == name && ep.Chats == config.AllChats
		})
		if !mirrored {
			continue
		}
		for _, ep := range r.Endpoints {
			if ep.Connector != name && ep.Chats == config.AllChats && !slices.Contains(peers, ep.Connector) {
				peers = append(peers, ep.Connector)
			}
		}
	}
	sort.Strings(peers)
	return peers
}

// seenChats lists the distinct chat and sender ids the core recorded for
// name's chats, on name and on its mirror peers.
func seenChats(ctx context.Context, s *Store, name string, peers []string) ([]string, error) {
	set := map[string]bool{}
	add := func(query string, args ...any) error {
		rows, err := s.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			set[id] = true
		}
		return rows.Err()
	}
	queries := []string{
		`SELECT DISTINCT chat FROM native_ids WHERE connector = ?`,
		`SELECT DISTINCT chat FROM outbox WHERE connector = ?`,
		`SELECT DISTINCT origin_chat FROM messages WHERE origin_connector = ?`,
	}
	for _, c := range append([]string{name}, peers...) {
		for _, q := range queries {
			if err := add(q, c); err != nil {
				return nil, err
			}
		}
	}
	if err := add(`SELECT DISTINCT sender_id FROM messages WHERE origin_connector = ?`, name); err != nil {
		return nil, err
	}
	delete(set, "")
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// moveCoreChats rewrites the message map and the outbox: origin's chats
// and senders, on origin and on its peers, and the events queued with
// them. Where both ids hold the same native id, the one under To stays.
func moveCoreChats(tx *Tx, origin string, peers []string, moves []ChatMove) error {
	// One-off statements: past the prepared-statement cache (tx.Tx).
	conns := append([]string{origin}, peers...)
	for _, q := range []string{
		`CREATE TEMP TABLE IF NOT EXISTS chat_moves (from_chat TEXT PRIMARY KEY, to_chat TEXT NOT NULL)`,
		`CREATE TEMP TABLE IF NOT EXISTS chat_move_conns (name TEXT PRIMARY KEY)`,
		`DELETE FROM temp.chat_moves`,
		`DELETE FROM temp.chat_move_conns`,
	} {
		if _, err := tx.Tx.Exec(q); err != nil {
			return err
		}
	}
	for _, m := range moves {
		if _, err := tx.Tx.Exec(`INSERT OR REPLACE INTO temp.chat_moves (from_chat, to_chat) VALUES (?, ?)`, m.From, m.To); err != nil {
			return err
		}
	}
	for _, c := range conns {
		if _, err := tx.Tx.Exec(`INSERT OR IGNORE INTO temp.chat_move_conns (name) VALUES (?)`, c); err != nil {
			return err
		}
	}
	for _, q := range []string{
		`UPDATE messages SET origin_chat = m.to_chat FROM temp.chat_moves AS m
			WHERE messages.origin_chat = m.from_chat AND messages.origin_connector IN (SELECT name FROM temp.chat_move_conns)`,
		`UPDATE messages SET sender_id = m.to_chat FROM temp.chat_moves AS m
			WHERE messages.sender_id = m.from_chat AND messages.origin_connector = ?`,
		`UPDATE OR IGNORE native_ids SET chat = m.to_chat FROM temp.chat_moves AS m
			WHERE native_ids.chat = m.from_chat AND native_ids.connector IN (SELECT name FROM temp.chat_move_conns)`,
		// What stayed collided with a row under the new id: a duplicate.
		`DELETE FROM native_ids WHERE chat IN (SELECT from_chat FROM temp.chat_moves) AND connector IN (SELECT name FROM temp.chat_move_conns)`,
		`DROP TABLE temp.chat_moves`,
		`DROP TABLE temp.chat_move_conns`,
	} {
		var err error
		if strings.HasSuffix(q, "?") {
			_, err = tx.Tx.Exec(q, origin)
		} else {
			_, err = tx.Tx.Exec(q)
		}
		if err != nil {
			return err
		}
	}
	return moveOutbox(tx, origin, conns, moves)
}

// moveOutbox rewrites queued events: their destination chat when it is a
// moved chat of origin or a peer, and in the event the chat, origin and
// sender ids that name a moved chat or person of origin.
func moveOutbox(tx *Tx, origin string, conns []string, moves []ChatMove) error {
	to := map[string]string{}
	for _, m := range moves {
		to[m.From] = m.To
	}
	type change struct {
		id    int64
		chat  string
		event []byte
	}
	var changes []change
	rows, err := tx.Tx.Query(`SELECT id, connector, chat, event FROM outbox`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var ch change
		var connector string
		if err := rows.Scan(&ch.id, &connector, &ch.chat, &ch.event); err != nil {
			rows.Close()
			return err
		}
		moved := false
		if n, ok := to[ch.chat]; ok && slices.Contains(conns, connector) {
			ch.chat, moved = n, true
		}
		ev, changed, err := moveEventIDs(ch.event, origin, conns, to)
		if err != nil {
			rows.Close()
			return fmt.Errorf("outbox row %d: %w", ch.id, err)
		}
		if changed {
			ch.event, moved = ev, true
		}
		if moved {
			changes = append(changes, ch)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, ch := range changes {
		if _, err := tx.Tx.Exec(`UPDATE outbox SET chat = ?, event = ? WHERE id = ?`, ch.chat, ch.event, ch.id); err != nil {
			return err
		}
	}
	return nil
}

// moveEventIDs rewrites a queued event's JSON field by field, so fields
// it does not know survive: chat and origin refs of conns naming a moved
// chat, and the sender when the event came from origin.
func moveEventIDs(raw []byte, origin string, conns []string, to map[string]string) ([]byte, bool, error) {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, false, err
	}
	changed := false
	fromOrigin := false
	for _, field := range []string{"chat", "origin"} {
		var ref map[string]any
		if ev[field] == nil || json.Unmarshal(ev[field], &ref) != nil {
			continue
		}
		conn, _ := ref["connector"].(string)
		id, _ := ref["id"].(string)
		if field == "chat" {
			fromOrigin = conn == origin
		}
		if n, ok := to[id]; ok && slices.Contains(conns, conn) {
			ref["id"] = n
			ev[field], _ = json.Marshal(ref)
			changed = true
		}
	}
	var sender map[string]any
	if fromOrigin && ev["sender"] != nil && json.Unmarshal(ev["sender"], &sender) == nil {
		if id, _ := sender["id"].(string); to[id] != "" {
			sender["id"] = to[id]
			ev["sender"], _ = json.Marshal(sender)
			changed = true
		}
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(ev)
	return out, err == nil, err
}
