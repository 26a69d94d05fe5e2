package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// ownerPower is the owner's power level in portals: admin, as the bot.
const ownerPower = 100

// ensurePortal returns the room for the origin chat, creating it as the
// bridge bot first if there is none: private, named and with a topic,
// with the owner invited (as a direct chat when direct) at power 100.
// Concurrent calls for one chat create one room.
func (b *asBridge) ensurePortal(ctx context.Context, origin bridge.ChatRef, direct bool, name, topic string) (id.RoomID, error) {
	if origin.Connector == "" || origin.ID == "" {
		return "", fmt.Errorf("portal for %q: the origin chat needs a connector and an id", origin)
	}
	if room, err := b.portalRoom(ctx, origin); err != nil || room != "" {
		return room, err
	}
	unlock, err := b.portalLocks.lock(ctx, origin.Connector+"\x00"+origin.ID)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another caller may have made it while this one waited.
	if room, err := b.portalRoom(ctx, origin); err != nil || room != "" {
		return room, err
	}

	users := map[id.UserID]int{b.owner: ownerPower}
	if !b.creatorsPrivileged(ctx) {
		// The override replaces the users map, so the bot keeps its 100.
		users[b.bot] = 100
	}
	req := &mautrix.ReqCreateRoom{
		Preset:             "private_chat",
		Name:               name,
		Topic:              topic,
		Invite:             []id.UserID{b.owner},
		IsDirect:           direct,
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: users},
	}
	resp, err := b.botIntent().CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("create the room for %s: %w", origin, err)
	}
	// A crash before this write leaves an orphan room and makes another
	// on the next call; rare, and visible only as an empty room.
	err = b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_portals (connector, origin_connector, origin_chat, room_id, name, direct) VALUES (?, ?, ?, ?, ?, ?)`,
			b.name, origin.Connector, origin.ID, resp.RoomID.String(), name, direct)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("record the room %s for %s: %w", resp.RoomID, origin, err)
	}
	b.log.Info("created a portal room", "chat", origin.String(), "room", resp.RoomID.String())
	return resp.RoomID, nil
}

// creatorsPrivileged reports whether the homeserver makes rooms of a
// version (12 on) where the creator has unlimited power and must not be
// in the power levels' users map, which would refuse the room. Unknown
// (the server did not say) counts as older versions, the common case;
// only an answer is remembered.
func (b *asBridge) creatorsPrivileged(ctx context.Context) bool {
	b.roomVersionMu.Lock()
	defer b.roomVersionMu.Unlock()
	if b.roomVersion == "" {
		caps, err := b.botIntent().Capabilities(ctx)
		if err != nil || caps.RoomVersions == nil || caps.RoomVersions.Default == "" {
			return false
		}
		b.roomVersion = id.RoomVersion(caps.RoomVersions.Default)
	}
	return b.roomVersion.PrivilegedRoomCreators()
}

// portalRoom is the room made for the origin chat, "" if none.
func (b *asBridge) portalRoom(ctx context.Context, origin bridge.ChatRef) (id.RoomID, error) {
	var room string
	err := b.store.QueryRowContext(ctx, `SELECT room_id FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
		b.name, origin.Connector, origin.ID).Scan(&room)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the portal of %s: %w", origin, err)
	}
	return id.RoomID(room), nil
}

// portalOrigin is the origin chat a portal room was made for, with the
// name last set; ok is false for rooms that are not portals.
func (b *asBridge) portalOrigin(ctx context.Context, room id.RoomID) (origin bridge.ChatRef, direct, ok bool, err error) {
	err = b.store.QueryRowContext(ctx, `SELECT origin_connector, origin_chat, name, direct FROM matrix_portals WHERE connector = ? AND room_id = ?`,
		b.name, room.String()).Scan(&origin.Connector, &origin.ID, &origin.Name, &direct)
	if errors.Is(err, sql.ErrNoRows) {
		return bridge.ChatRef{}, false, false, nil
	}
	if err != nil {
		return bridge.ChatRef{}, false, false, fmt.Errorf("look up the room %s: %w", room, err)
	}
	return origin, direct, true, nil
}

// setPortalName renames the origin chat's portal when name differs from
// the name last set. A chat without a portal is left alone: its room
// gets the name when it is made.
func (b *asBridge) setPortalName(ctx context.Context, origin bridge.ChatRef, name string) error {
	unlock, err := b.portalLocks.lock(ctx, origin.Connector+"\x00"+origin.ID)
	if err != nil {
		return err
	}
	defer unlock()
	var room, have string
	err = b.store.QueryRowContext(ctx, `SELECT room_id, name FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
		b.name, origin.Connector, origin.ID).Scan(&room, &have)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up the portal of %s: %w", origin, err)
	}
	if have == name {
		return nil
	}
	if _, err := b.botIntent().SendStateEvent(ctx, id.RoomID(room), event.StateRoomName, "", &event.RoomNameEventContent{Name: name}); err != nil {
		return fmt.Errorf("rename the room of %s: %w", origin, err)
	}
	return b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`UPDATE matrix_portals SET name = ? WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
			name, b.name, origin.Connector, origin.ID)
		return err
	})
}
