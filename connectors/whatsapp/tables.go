package whatsapp

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// The connector's own tables, beside whatsmeow's session tables:
// whatsapp_links says which device each link (connector name) is;
// whatsapp_messages remembers, per message, what replying to it, reacting
// to it, revoking it or voting in it needs (WhatsApp wants the author, a
// preview, and a poll's option names);
// whatsapp_chats caches chat names for listing and resolving routes.
var migrations = []string{
	`CREATE TABLE whatsapp_links (
		link TEXT PRIMARY KEY,
		jid  TEXT NOT NULL
	);
	CREATE TABLE whatsapp_messages (
		link    TEXT NOT NULL,
		chat    TEXT NOT NULL,
		id      TEXT NOT NULL,
		sender  TEXT NOT NULL,
		from_me INTEGER NOT NULL,
		text    TEXT NOT NULL,
		at      INTEGER NOT NULL,
		PRIMARY KEY (link, chat, id)
	) WITHOUT ROWID;
	CREATE TABLE whatsapp_chats (
		link  TEXT NOT NULL,
		jid   TEXT NOT NULL,
		name  TEXT NOT NULL,
		grp   INTEGER NOT NULL,
		PRIMARY KEY (link, jid)
	) WITHOUT ROWID;`,
	// For Prune: a link's messages by age.
	`CREATE INDEX whatsapp_messages_at ON whatsapp_messages (link, at);`,
	// whatsapp_history holds the messages of WhatsApp's history syncs
	// to backfill (the message as WhatsApp sent it), until relayed (done).
	`CREATE TABLE whatsapp_history (
		link TEXT NOT NULL,
		chat TEXT NOT NULL,
		id   TEXT NOT NULL,
		at   INTEGER NOT NULL,
		msg  BLOB NOT NULL,
		done INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (link, chat, id)
	) WITHOUT ROWID;
	CREATE INDEX whatsapp_history_todo ON whatsapp_history (link, done, chat, at);`,
	// whatsapp_placeholders are the messages shown as "waiting for this
	// message", until the message itself replaces them.
	`CREATE TABLE whatsapp_placeholders (
		link TEXT NOT NULL,
		chat TEXT NOT NULL,
		id   TEXT NOT NULL,
		PRIMARY KEY (link, chat, id)
	) WITHOUT ROWID;`,
	// whatsapp_lid_people are the people first met by LID alone, whose
	// LID is their id for good (people.go).
	`CREATE TABLE whatsapp_lid_people (
		link TEXT NOT NULL,
		lid  TEXT NOT NULL,
		PRIMARY KEY (link, lid)
	) WITHOUT ROWID;`,
	// When the link last heard from the phone itself (unix seconds), for
	// the warning before WhatsApp unlinks a device of an offline phone.
	`ALTER TABLE whatsapp_links ADD COLUMN phone_seen INTEGER NOT NULL DEFAULT 0;`,
	// people_settled: the ids of people recorded before are settled
	// (moves.go); number_seen: a LID person's number has turned up, so
	// its rows, if any, are merged at the next start.
	`ALTER TABLE whatsapp_links ADD COLUMN people_settled INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE whatsapp_lid_people ADD COLUMN number_seen INTEGER NOT NULL DEFAULT 0;`,
	// Disappearing chats (expiry.go): when a message's text goes (unix
	// seconds), and each chat's timer, which messages sent into it carry.
	`ALTER TABLE whatsapp_messages ADD COLUMN expires_at INTEGER;
	CREATE INDEX whatsapp_messages_expiring ON whatsapp_messages (expires_at) WHERE expires_at IS NOT NULL;
	CREATE TABLE whatsapp_timers (
		link    TEXT NOT NULL,
		chat    TEXT NOT NULL,
		seconds INTEGER NOT NULL,
		PRIMARY KEY (link, chat)
	) WITHOUT ROWID;`,
	// A poll's option names as WhatsApp has them (a JSON array, in the
	// order of the poll's options as relayed), which its votes name by
	// hash (votes.go); NULL for other messages.
	`ALTER TABLE whatsapp_messages ADD COLUMN poll_options TEXT;`,
}

// loadDevice returns the link's device, or nil when it is not linked (or
// its session was deleted, as whatsmeow does when the phone logs it out).
func (c *Connector) loadDevice(ctx context.Context) (*store.Device, error) {
	var jidText string
	err := c.store.QueryRowContext(ctx, `SELECT jid FROM whatsapp_links WHERE link = ?`, c.name).Scan(&jidText)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read WhatsApp link %q: %w", c.name, err)
	}
	jid, err := types.ParseJID(jidText)
	if err != nil {
		return nil, fmt.Errorf("WhatsApp link %q has a damaged device id %q: run `phonebridge unlink %s --local`", c.name, jidText, c.name)
	}
	dev, err := c.container.GetDevice(ctx, jid)
	if err != nil {
		return nil, fmt.Errorf("read WhatsApp session of link %q: %w", c.name, err)
	}
	return dev, nil
}

// saveLink records the device a link now is.
func (c *Connector) saveLink(ctx context.Context, jid types.JID) error {
	return c.store.Write(ctx, func(tx *bridge.Tx) error {
		// Linking is hearing from the phone.
		_, err := tx.Exec(`INSERT INTO whatsapp_links (link, jid, phone_seen) VALUES (?, ?, ?)
			ON CONFLICT (link) DO UPDATE SET jid = excluded.jid, phone_seen = excluded.phone_seen`, c.name, jid.String(), time.Now().Unix())
		return err
	})
}

// forgetLink drops the link's device record and what was cached for it,
// its message records too (an unlink).
func (c *Connector) forgetLink(ctx context.Context) error {
	c.forgetPeople()
	c.forgetPlaceholders()
	return c.dropLink(ctx, `DELETE FROM whatsapp_messages WHERE link = ?`, `DELETE FROM whatsapp_history WHERE link = ?`, `DELETE FROM whatsapp_placeholders WHERE link = ?`, `DELETE FROM whatsapp_lid_people WHERE link = ?`)
}

// forgetDevice drops the link's device record and its chat names but
// keeps its message records: a device removed on the phone is linked
// again to the same account, and what waits in the outbox meanwhile (a
// reaction, a reply, a delete) must still find the messages it acts on.
// They go with the retention prune, or an unlink.
func (c *Connector) forgetDevice(ctx context.Context) error {
	return c.dropLink(ctx)
}

func (c *Connector) dropLink(ctx context.Context, more ...string) error {
	// The names in memory go too: a link to another account must not
	// list this one's groups.
	c.chats.reset()
	c.desc.reset()
	return c.store.Write(ctx, func(tx *bridge.Tx) error {
		for _, q := range append([]string{
			`DELETE FROM whatsapp_links WHERE link = ?`,
			`DELETE FROM whatsapp_chats WHERE link = ?`,
		}, more...) {
			if _, err := tx.Exec(q, c.name); err != nil {
				return err
			}
		}
		return nil
	})
}

// remember records a message's reference, without waiting.
func (c *Connector) remember(ref msgRef) {
	if ref.ID == "" {
		return
	}
	c.store.WriteAsync(c.rememberTx(ref), c.rememberDone)
}

// rememberNow records a message the link sent, returning once committed:
// the chat's next delivery (an edit, delete or reaction of it) may come
// as soon as Send returns, and must find it.
func (c *Connector) rememberNow(ctx context.Context, ref msgRef) {
	if ref.ID == "" {
		return
	}
	c.rememberDone(c.store.Write(ctx, c.rememberTx(ref)))
}

func (c *Connector) rememberTx(ref msgRef) func(tx *bridge.Tx) error {
	var expires any
	if !ref.Expires.IsZero() {
		expires = ref.Expires.Unix()
		c.expiry.At(ref.Expires)
	}
	var options any
	if len(ref.Options) > 0 {
		b, _ := json.Marshal(ref.Options) // strings always marshal
		options = string(b)
	}
	return func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO whatsapp_messages (link, chat, id, sender, from_me, text, at, expires_at, poll_options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (link, chat, id) DO UPDATE SET text = excluded.text, poll_options = COALESCE(excluded.poll_options, poll_options)`,
			c.name, ref.Chat.ToNonAD().String(), ref.ID, ref.Sender.ToNonAD().String(), ref.FromMe, snippet(ref.Text), time.Now().Unix(), expires, options)
		return err
	}
}

func (c *Connector) rememberDone(err error) {
	if err != nil {
		c.log.Warn("could not remember a WhatsApp message; replies to it will quote it instead", "link", c.name, "err", err)
	}
}

var _ bridge.Pruner = (*Connector)(nil)

// pruneBatch is how many message records one write transaction deletes,
// so the store's writer is never held long.
const pruneBatch = 500

// Prune implements bridge.Pruner: it deletes the records (and so the
// text) of messages seen before before. Replying to one of them, reacting
// to it or revoking it then goes as for a message the link never saw.
func (c *Connector) Prune(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for _, q := range []string{
		`DELETE FROM whatsapp_messages WHERE (link, chat, id) IN
			(SELECT link, chat, id FROM whatsapp_messages WHERE link = ? AND at < ? LIMIT ?)`,
		// History relayed already; a chunk sent again finds the core
		// still knowing the ids it relayed, so nothing shows twice.
		`DELETE FROM whatsapp_history WHERE (link, chat, id) IN
			(SELECT link, chat, id FROM whatsapp_history WHERE link = ? AND done = 1 AND at < ? LIMIT ?)`,
	} {
		n, err := c.store.ExecBatches(ctx, pruneBatch, q, c.name, before.Unix())
		total += n
		if err != nil {
			return total, fmt.Errorf("prune WhatsApp messages of link %q: %w", c.name, err)
		}
	}
	return total, nil
}

// lookup returns a message's reference, or nil when unknown.
func (c *Connector) lookup(ctx context.Context, chat types.JID, id string) (*msgRef, error) {
	if id == "" {
		return nil, nil
	}
	var sender, text string
	var fromMe bool
	var at int64
	var options sql.NullString
	err := c.store.QueryRowContext(ctx, `SELECT sender, from_me, text, at, poll_options FROM whatsapp_messages WHERE link = ? AND chat = ? AND id = ?`,
		c.name, chat.ToNonAD().String(), id).Scan(&sender, &fromMe, &text, &at, &options)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s, _ := types.ParseJID(sender)
	ref := &msgRef{Chat: chat, ID: id, Sender: s, FromMe: fromMe, Text: text, At: time.Unix(at, 0)}
	if options.Valid {
		// A damaged list is as good as none: the poll's votes are dropped.
		_ = json.Unmarshal([]byte(options.String), &ref.Options)
	}
	return ref, nil
}

// snippet bounds the preview kept per message.
func snippet(s string) string {
	const max = 500
	if len(s) <= max {
		return s
	}
	r := []rune(s)
	if len(r) <= max {
		return s
	}
	return string(r[:max])
}
