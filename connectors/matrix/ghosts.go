package matrix

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// maxUserIDLength is the spec's limit on a whole user id, in bytes.
const maxUserIDLength = 255

// ghostLocalpart turns an origin sender id into a ghost's localpart:
// prefix, then the id with bytes outside a-z 0-9 . _ - / written as =xx
// (lowercase hex). '=' itself is escaped, so distinct ids never meet. An
// id too long for a user id is cut and ends in "==" and a digest, which
// no escaped id contains.
func ghostLocalpart(prefix, domain, senderID string) string {
	var sb strings.Builder
	sb.WriteString(prefix)
	for i := 0; i < len(senderID); i++ {
		c := senderID[i]
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "=%02x", c)
		}
	}
	local := sb.String()
	limit := maxUserIDLength - len("@:") - len(domain)
	if len(local) <= limit {
		return local
	}
	sum := sha256.Sum256([]byte(senderID))
	tail := "==" + hex.EncodeToString(sum[:8])
	cut := max(limit-len(tail), len(prefix))
	// Never cut an escape in half.
	if i := strings.LastIndexByte(local[:cut], '='); i >= len(prefix) && i > cut-3 {
		cut = i
	}
	return local[:cut] + tail
}

// ghostSender reverses ghostLocalpart: the origin sender a ghost speaks
// for; false for a localpart cut to fit (its sender is not in it).
func ghostSender(prefix, local string) (string, bool) {
	rest, ok := strings.CutPrefix(local, prefix)
	if !ok || strings.Contains(rest, "==") {
		return "", false
	}
	var sb strings.Builder
	for i := 0; i < len(rest); i++ {
		if rest[i] != '=' {
			sb.WriteByte(rest[i])
			continue
		}
		if i+2 >= len(rest) {
			return "", false
		}
		b, err := hex.DecodeString(rest[i+1 : i+3])
		if err != nil {
			return "", false
		}
		sb.Write(b)
		i += 2
	}
	return sb.String(), true
}

// ghostID is the ghost user speaking for an origin sender.
func (b *asBridge) ghostID(senderID string) id.UserID {
	return id.NewUserID(ghostLocalpart(b.opts.GhostPrefix, b.opts.Domain, senderID), b.opts.Domain)
}

// isGhost reports whether u is in the ghost namespace: on the bridge's
// server, with the ghost prefix and only the characters ghostLocalpart
// writes.
func (b *asBridge) isGhost(u id.UserID) bool {
	local, server, err := u.Parse()
	return err == nil && server == b.opts.Domain && strings.HasPrefix(local, b.opts.GhostPrefix) && isLocalpart(local)
}

// ghostDisplayName is a ghost's display name for a contact's name.
func (b *asBridge) ghostDisplayName(name string) string {
	return strings.ReplaceAll(b.opts.GhostName, "{name}", name)
}

// intent is a client acting as u (the bot or a ghost) with the as_token,
// through the ?user_id= identity assertion appservices have.
func (b *asBridge) intent(u id.UserID) *mautrix.Client {
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	if c, ok := b.clients[u]; ok {
		return c
	}
	c := b.newClient(u)
	c.SetAppServiceUserID = true
	b.clients[u] = c
	return c
}

// botIntent is the bridge bot's client.
func (b *asBridge) botIntent() *mautrix.Client { return b.intent(b.bot) }

func (b *asBridge) newClient(u id.UserID) *mautrix.Client {
	// The URL was checked in newASBridge.
	c, _ := mautrix.NewClient(b.opts.Homeserver, u, b.reg.AppToken)
	c.Client = b.http
	c.UserAgent = "phonebridge"
	return c
}

// ensureGhost makes the ghost exist, registered with the as_token, and
// shows the contact's name through the ghost_name template. Both are
// remembered, so a ghost seen again costs no request unless the name
// changed. An empty name leaves the display name as it is.
func (b *asBridge) ensureGhost(ctx context.Context, ghost id.UserID, name string) error {
	if !b.isGhost(ghost) {
		return bridge.Permanentf("%s is not a ghost of this bridge", ghost)
	}
	unlock, err := b.ghostLocks.lock(ctx, ghost.String())
	if err != nil {
		return err
	}
	defer unlock()
	var have string
	err = b.store.QueryRowContext(ctx, `SELECT display_name FROM matrix_ghosts WHERE connector = ? AND user_id = ?`, b.name, ghost.String()).Scan(&have)
	registered := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("look up the ghost %s: %w", ghost, err)
	}
	if !registered {
		local, _, _ := ghost.Parse()
		// No ?user_id=: the user does not exist yet.
		_, _, err := b.newClient("").Register(ctx, &mautrix.ReqRegister{
			Username:     local,
			Type:         mautrix.AuthTypeAppservice,
			InhibitLogin: true,
		})
		if err != nil && !errors.Is(err, mautrix.MUserInUse) {
			return fmt.Errorf("register the ghost %s: %w", ghost, err)
		}
		if err := b.saveGhost(ctx, ghost, ""); err != nil {
			return err
		}
	}
	want := b.ghostDisplayName(name)
	if name == "" || want == have {
		return nil
	}
	if err := b.intent(ghost).SetDisplayName(ctx, want); err != nil {
		return fmt.Errorf("set the display name of %s: %w", ghost, err)
	}
	return b.saveGhost(ctx, ghost, want)
}

// setGhostAvatar shows the contact's picture on the ghost (after
// ensureGhost) when avatarID differs from the one last set; no picture
// removes it.
func (b *asBridge) setGhostAvatar(ctx context.Context, ghost id.UserID, avatarID string, avatar *bridge.Media) error {
	unlock, err := b.ghostLocks.lock(ctx, ghost.String())
	if err != nil {
		return err
	}
	defer unlock()
	var have string
	if err := b.store.QueryRowContext(ctx, `SELECT avatar_id FROM matrix_ghosts WHERE connector = ? AND user_id = ?`, b.name, ghost.String()).Scan(&have); err != nil {
		return fmt.Errorf("look up the ghost %s: %w", ghost, err)
	}
	if have == avatarID {
		return nil
	}
	var uri id.ContentURI
	if avatar != nil {
		if uri, err = b.uploadAvatar(ctx, avatar); err != nil {
			return err
		}
	}
	if err := b.intent(ghost).SetAvatarURL(ctx, uri); err != nil {
		return fmt.Errorf("set the picture of %s: %w", ghost, err)
	}
	return b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`UPDATE matrix_ghosts SET avatar_id = ? WHERE connector = ? AND user_id = ?`, avatarID, b.name, ghost.String())
		return err
	})
}

// ghostChat reports whether the ghost was made, and a chat of origin
// whose portal it is in ("" if none), to ask the origin about its sender
// in.
func (b *asBridge) ghostChat(ctx context.Context, ghost id.UserID, origin string) (chat string, ok bool, err error) {
	var one int
	err = b.store.QueryRowContext(ctx, `SELECT 1 FROM matrix_ghosts WHERE connector = ? AND user_id = ?`, b.name, ghost.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up the ghost %s: %w", ghost, err)
	}
	err = b.store.QueryRowContext(ctx, `SELECT p.origin_chat FROM matrix_ghost_rooms g
		JOIN matrix_portals p ON p.connector = g.connector AND p.room_id = g.room_id
		WHERE g.connector = ? AND g.user_id = ? AND p.origin_connector = ? LIMIT 1`, b.name, ghost.String(), origin).Scan(&chat)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", true, fmt.Errorf("look up the rooms of %s: %w", ghost, err)
	}
	return chat, true, nil
}

func (b *asBridge) saveGhost(ctx context.Context, ghost id.UserID, displayName string) error {
	err := b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_ghosts (connector, user_id, display_name) VALUES (?, ?, ?)
			ON CONFLICT (connector, user_id) DO UPDATE SET display_name = excluded.display_name`, b.name, ghost.String(), displayName)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the ghost %s: %w", ghost, err)
	}
	return nil
}

// joinGhost makes the ghost (after ensureGhost) a member of room: it
// joins, and if the room wants an invite (portals are invite-only), the
// bot invites it first. Joined rooms are remembered; ghostLeft forgets
// one.
func (b *asBridge) joinGhost(ctx context.Context, ghost id.UserID, room id.RoomID) error {
	var one int
	err := b.store.QueryRowContext(ctx, `SELECT 1 FROM matrix_ghost_rooms WHERE connector = ? AND user_id = ? AND room_id = ?`,
		b.name, ghost.String(), room.String()).Scan(&one)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("look up the rooms of %s: %w", ghost, err)
	}
	gc := b.intent(ghost)
	if _, err := gc.JoinRoomByID(ctx, room); err != nil {
		if !errors.Is(err, mautrix.MForbidden) {
			return fmt.Errorf("join %s to %s: %w", ghost, room, err)
		}
		if _, err := b.botIntent().InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: ghost}); err != nil {
			return fmt.Errorf("invite %s to %s: %w", ghost, room, err)
		}
		if _, err := gc.JoinRoomByID(ctx, room); err != nil {
			return fmt.Errorf("join %s to %s: %w", ghost, room, err)
		}
	}
	err = b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT OR IGNORE INTO matrix_ghost_rooms (connector, user_id, room_id) VALUES (?, ?, ?)`,
			b.name, ghost.String(), room.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("record that %s joined %s: %w", ghost, room, err)
	}
	return nil
}

// ghostLeft forgets that the ghost is in room (it left, was kicked or
// banned), so the next joinGhost joins it again.
func (b *asBridge) ghostLeft(ctx context.Context, ghost id.UserID, room id.RoomID) error {
	return b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`DELETE FROM matrix_ghost_rooms WHERE connector = ? AND user_id = ? AND room_id = ?`,
			b.name, ghost.String(), room.String())
		return err
	})
}
