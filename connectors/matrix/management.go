package matrix

// The management room, as mautrix-whatsapp's users know it: the owner
// invites the bridge bot to a room of their own (usually a DM), and there
// links, unlinks and lists accounts with commands instead of the CLI. The
// core's LinkAdmin does the work; this file only speaks Matrix.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
	"rsc.io/qr"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// managementMigration remembers management rooms across restarts.
const managementMigration = `CREATE TABLE matrix_management_rooms (
	connector TEXT NOT NULL,
	room_id   TEXT NOT NULL,
	PRIMARY KEY (connector, room_id)
) WITHOUT ROWID;`

// managementTimeout bounds one homeserver call made for a command.
const managementTimeout = 30 * time.Second

// maxChatsListed keeps a `chats` answer readable; a search narrows it.
const maxChatsListed = 50

const managementHelp = `Commands for the phonebridge bot (send them here, without a prefix):

- **links** — each linked account and its state
- **link** [NAME] — link WhatsApp by QR code: scan it in WhatsApp → Settings → Linked devices → Link a device
- **link** [NAME] +PHONE — link with a pairing code typed on the phone instead
- **cancel** — stop a link in progress
- **unlink** [NAME] [--local] — log the device out of the phone's linked devices; --local only forgets its keys here
- **chats** [NAME] [SEARCH] — the account's chats and their ids, for routes
- **backfill** [NAME] CHAT [COUNT] — ask the phone for COUNT (default 50) older messages of CHAT (its name or id), shown in its portal as history
- **help** — this list

NAME is the connector's name in the config; it may be left out when there is one link.`

// management is the management rooms' state.
type management struct {
	mu      sync.Mutex
	admin   bridge.LinkAdmin
	rooms   map[id.RoomID]bool
	linking map[id.RoomID]context.CancelFunc // a link in progress, per room
}

// SetLinkAdmin implements bridge.LinkConsole.
func (c *Connector) SetLinkAdmin(a bridge.LinkAdmin) {
	c.mgmt.mu.Lock()
	c.mgmt.admin = a
	c.mgmt.mu.Unlock()
}

// loadManagementRooms reads the management rooms known from before.
func (c *Connector) loadManagementRooms(ctx context.Context) error {
	rows, err := c.store.QueryContext(ctx, `SELECT room_id FROM matrix_management_rooms WHERE connector = ?`, c.name)
	if err != nil {
		return fmt.Errorf("read the management rooms: %w", err)
	}
	defer rows.Close()
	rooms := map[id.RoomID]bool{}
	for rows.Next() {
		var room string
		if err := rows.Scan(&room); err != nil {
			return err
		}
		rooms[id.RoomID(room)] = true
	}
	c.mgmt.mu.Lock()
	c.mgmt.rooms = rooms
	c.mgmt.mu.Unlock()
	return rows.Err()
}

func (c *Connector) isManagementRoom(room id.RoomID) bool {
	c.mgmt.mu.Lock()
	defer c.mgmt.mu.Unlock()
	return c.mgmt.rooms[room]
}

// managementInvite accepts the owner's invite of the bot to a room that
// is neither a portal nor routed: that room becomes a management room.
// It works in the background, as the homeserver may wait for this
// transaction's answer before it handles the join.
func (c *Connector) managementInvite(ctx context.Context, room id.RoomID, inviter id.UserID) bool {
	if inviter != c.as.owner || c.isRouted(room) {
		return false
	}
	if _, _, portal, err := c.as.portalOrigin(ctx, room); err != nil || portal {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, managementTimeout)
		defer cancel()
		if _, err := c.as.botIntent().JoinRoom(ctx, string(room), nil); err != nil {
			c.log.Warn("cannot join the owner's management room; invite the bot again", "room", room, "err", oneLine(err))
			return
		}
		err := c.store.Write(ctx, func(tx *bridge.Tx) error {
			_, err := tx.Exec(`INSERT OR IGNORE INTO matrix_management_rooms (connector, room_id) VALUES (?, ?)`, c.name, string(room))
			return err
		})
		if err != nil {
			c.log.Warn("cannot remember the management room; commands there work until a restart", "room", room, "err", err)
		}
		c.mgmt.mu.Lock()
		c.mgmt.rooms[room] = true
		c.mgmt.mu.Unlock()
		c.log.Info("joined the owner's management room", "room", room)
		c.reply(ctx, room, "Hello! I am the phonebridge bot. "+managementHelp)
	}()
	return true
}

// managementEvent runs the owner's command from a management room;
// anyone else there is ignored.
func (c *Connector) managementEvent(evt *event.Event) {
	if evt.Type != event.EventMessage || evt.Sender != c.as.owner {
		return
	}
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			return
		}
	}
	msg := evt.Content.AsMessage()
	if msg.MsgType != event.MsgText || msg.RelatesTo.GetReplaceID() != "" {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.command(evt.RoomID, msg.Body)
	}()
}

// command runs one command line.
func (c *Connector) command(room id.RoomID, line string) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return
	}
	cmd := strings.ToLower(strings.TrimLeft(fields[0], "!"))
	args := fields[1:]
	ctx, cancel := context.WithTimeout(c.ctx, managementTimeout)
	defer cancel()
	c.mgmt.mu.Lock()
	admin := c.mgmt.admin
	c.mgmt.mu.Unlock()
	if admin == nil {
		c.reply(ctx, room, "Link management is not available in this process.")
		return
	}
	var text string
	switch cmd {
	case "help":
		text = managementHelp
	case "links":
		text = linksText(admin.Links())
	case "link":
		text = c.startLink(room, admin, args)
	case "cancel":
		text = c.cancelLink(room)
	case "unlink":
		text = unlinkText(ctx, admin, args)
	case "chats":
		text = chatsText(ctx, admin, args)
	case "backfill":
		text = backfillText(ctx, admin, args)
	default:
		text = fmt.Sprintf("Unknown command `%s`; send `help` for the list.", fields[0])
	}
	if text != "" {
		c.reply(ctx, room, text)
	}
}

// pickLink resolves an optional link name at the start of args: a name
// given, or the only link there is.
func pickLink(admin bridge.LinkAdmin, args []string) (name string, rest []string, problem string) {
	links := admin.Links()
	names := make([]string, len(links))
	for i, l := range links {
		names[i] = l.Name
	}
	if len(args) > 0 && slices.Contains(names, args[0]) {
		return args[0], args[1:], ""
	}
	switch len(names) {
	case 0:
		return "", args, "No connector links an account (add a `whatsapp` connector to the config)."
	case 1:
		return names[0], args, ""
	}
	return "", args, fmt.Sprintf("Say which link: one of %s.", strings.Join(names, ", "))
}

func linksText(links []bridge.LinkStatus) string {
	if len(links) == 0 {
		return "No connector links an account."
	}
	var b strings.Builder
	for _, l := range links {
		fmt.Fprintf(&b, "- **%s**: %s since %s", l.Name, l.State, l.Since.UTC().Format("2006-01-02 15:04 UTC"))
		if a := l.Account; a.ID != "" {
			fmt.Fprintf(&b, ", account %s", a)
		}
		if d := linktext.Room.Detail(l); d != "" {
			fmt.Fprintf(&b, " — %s", d)
		}
		if !l.Until.IsZero() {
			fmt.Fprintf(&b, " until %s", l.Until.UTC().Format("2006-01-02 15:04 UTC"))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func unlinkText(ctx context.Context, admin bridge.LinkAdmin, args []string) string {
	name, rest, problem := pickLink(admin, args)
	if problem != "" {
		return problem
	}
	local := len(rest) == 1 && rest[0] == "--local"
	if len(rest) > 0 && !local {
		return "Usage: `unlink [NAME] [--local]`."
	}
	l, _ := admin.Linker(name)
	if err := l.Unlink(ctx, local); err != nil {
		var le *bridge.LinkError
		if errors.As(err, &le) {
			return fmt.Sprintf("Unlinking %s failed: %s", name, linktext.Room.UnlinkFailure(name, le.Service, le))
		}
		return fmt.Sprintf("Unlinking %s failed: %s", name, oneLine(err))
	}
	if local {
		return fmt.Sprintf("Forgot the keys of %s here; the phone lists the device until you remove it there (WhatsApp → Settings → Linked devices). Send `link %s` to link again.", name, name)
	}
	return fmt.Sprintf("Unlinked %s: the device left the phone's linked devices. Send `link %s` to link again.", name, name)
}

// backfillText asks a link for older messages: backfill [NAME] CHAT
// [COUNT], where CHAT may have spaces and a last number is the count.
func backfillText(ctx context.Context, admin bridge.LinkAdmin, args []string) string {
	name, rest, problem := pickLink(admin, args)
	if problem != "" {
		return problem
	}
	count := 50
	if len(rest) > 1 {
		if n, err := strconv.Atoi(rest[len(rest)-1]); err == nil {
			count, rest = n, rest[:len(rest)-1]
		}
	}
	if len(rest) == 0 {
		return "Usage: `backfill [NAME] CHAT [COUNT]`, CHAT as `chats` lists it."
	}
	l, _ := admin.Linker(name)
	bf, ok := l.(bridge.Backfiller)
	if !ok {
		return fmt.Sprintf("%s cannot ask for older messages.", name)
	}
	chat := strings.Join(rest, " ")
	if err := bf.Backfill(ctx, chat, count); err != nil {
		return fmt.Sprintf("Backfill of %s failed: %s", chat, oneLine(err))
	}
	return fmt.Sprintf("Asked the phone of %s for %d older messages of %s; they appear in its portal as they come.", name, count, chat)
}

func chatsText(ctx context.Context, admin bridge.LinkAdmin, args []string) string {
	name, rest, problem := pickLink(admin, args)
	if problem != "" {
		return problem
	}
	lister, ok := admin.ChatLister(name)
	if !ok {
		return fmt.Sprintf("%s cannot list its chats.", name)
	}
	search := strings.Join(rest, " ")
	chats, err := lister.Chats(ctx, search)
	if err != nil {
		return fmt.Sprintf("Listing the chats of %s failed: %s", name, oneLine(err))
	}
	if len(chats) == 0 {
		if search != "" {
			return fmt.Sprintf("No chat of %s matches %q.", name, search)
		}
		return fmt.Sprintf("%s has no chats yet.", name)
	}
	var b strings.Builder
	for i, ch := range chats {
		if i == maxChatsListed {
			fmt.Fprintf(&b, "… and %d more; add a search word to narrow the list.\n", len(chats)-maxChatsListed)
			break
		}
		kind := "person"
		if ch.Group {
			kind = "group"
		}
		fmt.Fprintf(&b, "- %s — `%s` (%s)\n", ch.Name, ch.ID, kind)
	}
	return b.String()
}

// startLink begins linking in the background; its progress (QR images,
// a pairing code) and outcome are posted to room.
func (c *Connector) startLink(room id.RoomID, admin bridge.LinkAdmin, args []string) string {
	name, rest, problem := pickLink(admin, args)
	if problem != "" {
		return problem
	}
	var opts bridge.LinkOptions
	if len(rest) > 0 {
		// A number may be written with spaces: "+1 555 123 4567".
		phone, err := control.NormalizePhone(strings.Join(rest, " "))
		if err != nil {
			return fmt.Sprintf("%s; usage: `link [NAME] [+PHONE]`.", err)
		}
		opts.Phone = phone
	}
	l, _ := admin.Linker(name)
	c.mgmt.mu.Lock()
	if c.mgmt.linking[room] != nil {
		c.mgmt.mu.Unlock()
		return "A link is already in progress here; send `cancel` to stop it first."
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.mgmt.linking[room] = cancel
	c.mgmt.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mgmt.mu.Lock()
			delete(c.mgmt.linking, room)
			c.mgmt.mu.Unlock()
			cancel()
		}()
		c.runLink(ctx, room, name, l, opts)
	}()
	return ""
}

func (c *Connector) cancelLink(room id.RoomID) string {
	c.mgmt.mu.Lock()
	cancel := c.mgmt.linking[room]
	c.mgmt.mu.Unlock()
	if cancel == nil {
		return "No link is in progress here."
	}
	cancel()
	return ""
}

// runLink drives one link and tells the room how it goes. The QR image is
// sent once and then replaced by an edit each time WhatsApp rotates the
// code, so the room holds one live code; it is redacted at the end, as a
// spent code is of no use to anyone.
func (c *Connector) runLink(ctx context.Context, room id.RoomID, name string, l bridge.Linker, opts bridge.LinkOptions) {
	var qrEvent id.EventID
	progress := func(p bridge.LinkProgress) {
		callCtx, cancel := context.WithTimeout(ctx, managementTimeout)
		defer cancel()
		switch p.Kind {
		case bridge.ProgressQR:
			if qrEvent == "" {
				c.reply(callCtx, room, "Scan this code with WhatsApp on your phone: Settings → Linked devices → Link a device. It is replaced as WhatsApp renews it; send `cancel` to stop.")
			}
			sent, err := c.sendQR(callCtx, room, p.QR, qrEvent)
			if err != nil {
				c.log.Warn("cannot post the link QR code to the management room", "room", room, "err", oneLine(err))
				return
			}
			if qrEvent == "" {
				qrEvent = sent
			}
		case bridge.ProgressPairingCode:
			c.reply(callCtx, room, fmt.Sprintf("Pairing code: **%s**\n\nOn your phone: WhatsApp → Settings → Linked devices → Link a device → Link with phone number instead, then type the code.", p.PairingCode))
		case bridge.ProgressWaiting:
			c.reply(callCtx, room, linktext.Room.Waiting(l.LinkStatus().Service, p))
		}
	}
	acct, err := l.Link(ctx, opts, progress)
	// The room is told even when the link was cancelled by Stop.
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), managementTimeout)
	defer cancel()
	if qrEvent != "" {
		if _, rerr := c.as.botIntent().RedactEvent(endCtx, room, qrEvent, mautrix.ReqRedact{Reason: "linking finished"}); rerr != nil {
			c.log.Debug("cannot redact the spent link QR code", "room", room, "err", oneLine(rerr))
		}
	}
	var linkErr *bridge.LinkError
	switch {
	case err == nil:
		c.reply(endCtx, room, fmt.Sprintf("Linked %s to %s. Messages are relayed now.", name, acct))
	case errors.As(err, &linkErr) && linkErr.Reason == bridge.LinkCancelled, errors.Is(err, context.Canceled):
		c.reply(endCtx, room, "Linking cancelled.")
	case linkErr != nil:
		c.reply(endCtx, room, fmt.Sprintf("Linking %s failed: %s", name, linktext.Room.Failure(name, linkErr.Service, linkErr)))
	default:
		c.reply(endCtx, room, fmt.Sprintf("Linking %s failed: %s", name, oneLine(err)))
	}
}

// qrScale is pixels per QR module: WhatsApp's codes (about 50 modules)
// come out near 500 px, easy to scan from a screen.
const qrScale = 8

// sendQR uploads code as a PNG and posts it, or, with replace set,
// replaces that image with it.
func (c *Connector) sendQR(ctx context.Context, room id.RoomID, code string, replace id.EventID) (id.EventID, error) {
	png, side, err := qrPNG(code)
	if err != nil {
		return "", err
	}
	bot := c.as.botIntent()
	up, err := bot.UploadBytesWithName(ctx, png, "image/png", "whatsapp-link-code.png")
	if err != nil {
		return "", fmt.Errorf("upload the QR code: %w", err)
	}
	content := &event.MessageEventContent{
		MsgType: event.MsgImage,
		Body:    "whatsapp-link-code.png",
		URL:     up.ContentURI.CUString(),
		Info:    &event.FileInfo{MimeType: "image/png", Size: len(png), Width: side, Height: side},
	}
	if replace != "" {
		content.SetEdit(replace)
	}
	resp, err := bot.SendMessageEvent(ctx, room, event.EventMessage, content)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

// qrPNG renders code as a PNG with its quiet zone, and its side in pixels.
func qrPNG(code string) ([]byte, int, error) {
	q, err := qr.Encode(code, qr.L)
	if err != nil {
		return nil, 0, fmt.Errorf("encode the QR code: %w", err)
	}
	q.Scale = qrScale
	return q.PNG(), (q.Size + 8) * qrScale, nil
}

// reply posts text (Markdown) to room as a notice from the bot; a failure
// is only logged, as there is no one else to tell.
func (c *Connector) reply(ctx context.Context, room id.RoomID, text string) {
	content := format.RenderMarkdown(text, true, false)
	content.MsgType = event.MsgNotice
	if _, err := c.as.botIntent().SendMessageEvent(ctx, room, event.EventMessage, &content); err != nil {
		c.log.Warn("cannot answer in the management room", "room", room, "err", oneLine(err))
	}
}
