package matrix

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"html"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

var _ bridge.ChatMover = (*Connector)(nil)

// MoveChats implements bridge.ChatMover: a portal kept under a chat's old
// id is kept under its new one. When both ids have a portal (one person
// who had two rooms), rooms cannot be merged: the new id's room stays the
// portal, the other keeps its older messages, and the operator is told
// both. It may run before Start, so the tables may predate this release
// or not exist at all.
func (c *Connector) MoveChats(tx *bridge.Tx, origin string, moves []bridge.ChatMove) ([]string, error) {
	if c.opts.Mode != ModeAppservice {
		return nil, nil
	}
	if ok, err := tableExists(tx, "matrix_portals"); !ok || err != nil {
		return nil, err
	}
	pending, err := tableExists(tx, "matrix_portals_pending")
	if err != nil {
		return nil, err
	}
	var reports []string
	for _, m := range moves {
		if pending {
			if _, err := tx.Exec(`UPDATE OR IGNORE matrix_portals_pending SET origin_chat = ? WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, m.To, c.name, origin, m.From); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`DELETE FROM matrix_portals_pending WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, c.name, origin, m.From); err != nil {
				return nil, err
			}
		}
		from, err := portalRoomTx(tx, c.name, origin, m.From)
		if err != nil {
			return nil, err
		}
		if from.room == "" {
			continue
		}
		to, err := portalRoomTx(tx, c.name, origin, m.To)
		if err != nil {
			return nil, err
		}
		if to.room == "" {
			if _, err := tx.Exec(`UPDATE matrix_portals SET origin_chat = ? WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, m.To, c.name, origin, m.From); err != nil {
				return nil, err
			}
		} else {
			// The old room stays a way in: what is written there still
			// reaches the chat, under its new id.
			if _, err := tx.Tx.Exec(retiredTable); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`INSERT OR REPLACE INTO matrix_portals_retired (connector, room_id, origin_connector, origin_chat, name, direct, successor)
				SELECT connector, room_id, origin_connector, ?, name, direct, ? FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
				m.To, to.room, c.name, origin, m.From); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`DELETE FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, c.name, origin, m.From); err != nil {
				return nil, err
			}
			reports = append(reports, fmt.Sprintf("%q had two Matrix rooms: %s (as %s) and %s (as %s), one person under two ids; new messages go to %s, and %s keeps its older messages (leave it when you no longer need them)",
				cmp.Or(to.name, from.name, m.To), from.room, m.From, to.room, m.To, to.room, from.room))
		}
	}
	return reports, nil
}

type portalName struct{ room, name string }

func portalRoomTx(tx *bridge.Tx, connector, origin, chat string) (portalName, error) {
	var p portalName
	err := tx.QueryRow(`SELECT room_id, name FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, connector, origin, chat).Scan(&p.room, &p.name)
	if errors.Is(err, sql.ErrNoRows) {
		return portalName{}, nil
	}
	return p, err
}

func tableExists(tx *bridge.Tx, name string) (bool, error) {
	var n int
	err := tx.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
	return n > 0, err
}

// retiredTable holds the rooms that stopped being portals when their
// chat's id moved to one that had a room of its own: a message written
// there still goes to the chat, and the room is told once where the chat
// went on. It is also an appservice migration step; MoveChats runs before
// the migrations and makes it if it must.
const retiredTable = `CREATE TABLE IF NOT EXISTS matrix_portals_retired (
	connector        TEXT NOT NULL,
	room_id          TEXT NOT NULL,
	origin_connector TEXT NOT NULL,
	origin_chat      TEXT NOT NULL,
	name             TEXT NOT NULL,
	direct           INTEGER NOT NULL,
	successor        TEXT NOT NULL,
	told             INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (connector, room_id)
) WITHOUT ROWID`

var _ bridge.ChatsMovedWatcher = (*Connector)(nil)

// ChatsMoved implements bridge.ChatsMovedWatcher: portals are read from
// the store, which MoveChats rewrote, so what is left is to tell a room
// that stopped being a portal where its chat went on, as at start.
func (c *Connector) ChatsMoved(origin string, moves []bridge.ChatMove) {
	if c.opts.Mode != ModeAppservice {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Under mu, as Stop cancels: no goroutine is added once it waits.
	if c.ctx == nil || c.ctx.Err() != nil || c.as == nil {
		return
	}
	ctx := c.ctx
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.tellRetired(ctx)
	}()
}

// tellRetired posts, once, in each retired portal where its chat went on.
// A room it cannot post in is tried again at the next start.
func (c *Connector) tellRetired(ctx context.Context) {
	c.retiredMu.Lock()
	defer c.retiredMu.Unlock()
	rows, err := c.store.QueryContext(ctx, `SELECT room_id, successor FROM matrix_portals_retired WHERE connector = ? AND told = 0`, c.name)
	if err != nil {
		c.log.Warn("cannot read the rooms that stopped being portals", "err", err)
		return
	}
	type retired struct{ room, successor string }
	var todo []retired
	for rows.Next() {
		var r retired
		if rows.Scan(&r.room, &r.successor) == nil {
			todo = append(todo, r)
		}
	}
	rows.Close()
	for _, r := range todo {
		const says = "This chat goes on in %s: new messages arrive there. What you write here still reaches the chat."
		link := fmt.Sprintf(`<a href="%s">%s</a>`, html.EscapeString(id.RoomID(r.successor).URI().MatrixToURL()), html.EscapeString(r.successor))
		content := &event.MessageEventContent{
			MsgType:       event.MsgNotice,
			Body:          fmt.Sprintf(says, r.successor),
			Format:        event.FormatHTML,
			FormattedBody: fmt.Sprintf(says, link),
		}
		if _, err := c.as.botIntent().SendMessageEvent(ctx, id.RoomID(r.room), event.EventMessage, content); err != nil {
			c.log.Warn("cannot tell a room that stopped being a portal where its chat went on; tried again at the next start", "room", r.room, "err", oneLine(err))
			continue
		}
		err := c.store.Write(ctx, func(tx *bridge.Tx) error {
			_, err := tx.Exec(`UPDATE matrix_portals_retired SET told = 1 WHERE connector = ? AND room_id = ?`, c.name, r.room)
			return err
		})
		if err != nil {
			c.log.Warn("cannot record that a retired portal was told where its chat went on", "room", r.room, "err", err)
		}
	}
}
