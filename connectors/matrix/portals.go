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

// portalInfo is what a portal shows of its origin chat. Described says
// the origin answered for the topic and picture; when it did not, they
// are left as they are rather than cleared. Failed says it could not
// answer now (rather than that it describes nothing).
type portalInfo struct {
	Name, Topic string
	Direct      bool
	AvatarID    string
	Avatar      *bridge.Media
	Described   bool
	Failed      bool
	// asked says the origin was asked (describeChat), at gen of its
	// describedSet entry.
	asked bool
	gen   uint64
}

// ensurePortal returns the room for the origin chat, creating it as the
// bridge bot first if there is none: private, with the chat's name, topic
// and picture, with the owner invited (as a direct chat when Direct) at
// power 100. Concurrent calls for one chat create one room.
func (b *asBridge) ensurePortal(ctx context.Context, origin bridge.ChatRef, info portalInfo) (id.RoomID, error) {
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

	// A crash between making the room and recording it leaves the chat
	// pending: the room it made is found by its creation marker and
	// adopted, not made twice.
	pending, err := b.portalPending(ctx, origin)
	if err != nil {
		return "", err
	}
	if pending {
		room, err := b.findPortal(ctx, origin)
		if err != nil {
			return "", err
		}
		if room != "" {
			if err := b.completePortal(ctx, room, info); err != nil {
				return "", err
			}
			if err := b.recordPortal(ctx, origin, room, info, ""); err != nil {
				return "", err
			}
			b.log.Info("adopted the portal room made before a crash", "chat", origin.String(), "room", room.String())
			return room, nil
		}
	} else if err := b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_portals_pending (connector, origin_connector, origin_chat) VALUES (?, ?, ?)`, b.name, origin.Connector, origin.ID)
		return err
	}); err != nil {
		return "", fmt.Errorf("note the portal being made for %s: %w", origin, err)
	}

	users := map[id.UserID]int{b.owner: ownerPower}
	if !b.creatorsPrivileged(ctx) {
		// The override replaces the users map, so the bot keeps its 100.
		users[b.bot] = 100
	}
	req := &mautrix.ReqCreateRoom{
		Preset:             "private_chat",
		Name:               info.Name,
		Topic:              info.Topic,
		Invite:             []id.UserID{b.owner},
		IsDirect:           info.Direct,
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: users},
		CreationContent:    map[string]any{portalMarker: portalMarkerValue(b.name, origin)},
	}
	avatarID := ""
	if info.Avatar != nil {
		// A picture that cannot be had now is tried again by syncPortal.
		if uri, err := b.uploadAvatar(ctx, info.Avatar); err != nil {
			b.log.Warn("cannot copy a chat's picture to its new portal; trying again with a later message", "chat", origin.String(), "err", oneLine(err))
		} else {
			avatarID = info.AvatarID
			req.InitialState = append(req.InitialState, &event.Event{
				Type: event.StateRoomAvatar, Content: event.Content{Parsed: &event.RoomAvatarEventContent{URL: uri.CUString()}},
			})
		}
	}
	resp, err := b.botIntent().CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("create the room for %s: %w", origin, err)
	}
	if err := b.recordPortal(ctx, origin, resp.RoomID, info, avatarID); err != nil {
		return "", err
	}
	b.log.Info("created a portal room", "chat", origin.String(), "room", resp.RoomID.String())
	b.chatDescribed(origin, info, portalRow{topic: info.Topic, avatarID: avatarID})
	return resp.RoomID, nil
}

// completePortal gives a room made before a crash what its creation
// may not have reached: the homeserver makes a room's name, topic and
// invites one event at a time, and stops when the bridge's request is
// cut off.
func (b *asBridge) completePortal(ctx context.Context, room id.RoomID, info portalInfo) error {
	bot := b.botIntent()
	// Name and topic first: the invite shows the room as it is then.
	var name event.RoomNameEventContent
	if info.Name != "" && (bot.StateEvent(ctx, room, event.StateRoomName, "", &name) != nil || name.Name == "") {
		if _, err := bot.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: info.Name}); err != nil {
			return fmt.Errorf("name the portal %s made before a crash: %w", room, err)
		}
	}
	var topic event.TopicEventContent
	if info.Topic != "" && (bot.StateEvent(ctx, room, event.StateTopic, "", &topic) != nil || topic.Topic == "") {
		if _, err := bot.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: info.Topic}); err != nil {
			return fmt.Errorf("set the topic of the portal %s made before a crash: %w", room, err)
		}
	}
	var member event.MemberEventContent
	if err := bot.StateEvent(ctx, room, event.StateMember, b.owner.String(), &member); err != nil || (member.Membership != event.MembershipInvite && member.Membership != event.MembershipJoin) {
		if _, err := bot.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: b.owner}); err != nil {
			return fmt.Errorf("invite the owner to the portal %s made before a crash: %w", room, err)
		}
	}
	return nil
}

// portalMarker is the key, in a portal's m.room.create content, that
// names the chat it was made for.
const portalMarker = "com.github.phonebridge.portal"

func portalMarkerValue(connector string, origin bridge.ChatRef) string {
	return connector + "\x00" + origin.Connector + "\x00" + origin.ID
}

// recordPortal records room as origin's portal and ends its pending mark.
func (b *asBridge) recordPortal(ctx context.Context, origin bridge.ChatRef, room id.RoomID, info portalInfo, avatarID string) error {
	err := b.store.Write(ctx, func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`INSERT INTO matrix_portals (connector, origin_connector, origin_chat, room_id, name, direct, topic, avatar_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			b.name, origin.Connector, origin.ID, room.String(), info.Name, info.Direct, info.Topic, avatarID); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM matrix_portals_pending WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`, b.name, origin.Connector, origin.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the room %s for %s: %w", room, origin, err)
	}
	return nil
}

func (b *asBridge) portalPending(ctx context.Context, origin bridge.ChatRef) (bool, error) {
	var one int
	err := b.store.QueryRowContext(ctx, `SELECT 1 FROM matrix_portals_pending WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
		b.name, origin.Connector, origin.ID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up the portal being made for %s: %w", origin, err)
	}
	return true, nil
}

// findPortal looks through the bot's rooms for one made for origin, "" if
// none. It reads every room's creation event, so it runs only after a
// crash left a portal pending.
func (b *asBridge) findPortal(ctx context.Context, origin bridge.ChatRef) (id.RoomID, error) {
	bot := b.botIntent()
	joined, err := bot.JoinedRooms(ctx)
	if err != nil {
		return "", fmt.Errorf("list the bot's rooms to find the portal made for %s: %w", origin, err)
	}
	want := portalMarkerValue(b.name, origin)
	for _, room := range joined.JoinedRooms {
		var create map[string]any
		if err := bot.StateEvent(ctx, room, event.StateCreate, "", &create); err != nil {
			continue // a room it cannot read is not one it made
		}
		if create[portalMarker] == want {
			return room, nil
		}
	}
	return "", nil
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

// portalRow is what is recorded of a portal: its room and what it was
// last given of the origin chat.
type portalRow struct {
	room                  id.RoomID
	name, topic, avatarID string
}

// outdated reports whether the portal shows other than info: a name the
// event gives, or, where the origin described the chat, its topic and
// picture.
func (p portalRow) outdated(info portalInfo) bool {
	return info.Name != "" && info.Name != p.name ||
		info.Described && (info.Topic != p.topic || info.AvatarID != p.avatarID)
}

// portal is the recorded portal of the origin chat; ok is false if none.
func (b *asBridge) portal(ctx context.Context, origin bridge.ChatRef) (p portalRow, ok bool, err error) {
	var room string
	err = b.store.QueryRowContext(ctx, `SELECT room_id, name, topic, avatar_id FROM matrix_portals WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
		b.name, origin.Connector, origin.ID).Scan(&room, &p.name, &p.topic, &p.avatarID)
	if errors.Is(err, sql.ErrNoRows) {
		return portalRow{}, false, nil
	}
	if err != nil {
		return portalRow{}, false, fmt.Errorf("look up the portal of %s: %w", origin, err)
	}
	p.room = id.RoomID(room)
	return p, true, nil
}

// portalRoom is the room made for the origin chat, "" if none.
func (b *asBridge) portalRoom(ctx context.Context, origin bridge.ChatRef) (id.RoomID, error) {
	p, _, err := b.portal(ctx, origin)
	return p.room, err
}

// portalOrigin is the origin chat a portal room was made for, with the
// name last set; ok is false for rooms that are not portals.
func (b *asBridge) portalOrigin(ctx context.Context, room id.RoomID) (origin bridge.ChatRef, direct, ok bool, err error) {
	err = b.store.QueryRowContext(ctx, `SELECT origin_connector, origin_chat, name, direct FROM matrix_portals WHERE connector = ? AND room_id = ?`,
		b.name, room.String()).Scan(&origin.Connector, &origin.ID, &origin.Name, &direct)
	if errors.Is(err, sql.ErrNoRows) {
		// A room that stopped being its chat's portal still reaches it.
		err = b.store.QueryRowContext(ctx, `SELECT origin_connector, origin_chat, name, direct FROM matrix_portals_retired WHERE connector = ? AND room_id = ?`,
			b.name, room.String()).Scan(&origin.Connector, &origin.ID, &origin.Name, &direct)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return bridge.ChatRef{}, false, false, nil
	}
	if err != nil {
		return bridge.ChatRef{}, false, false, fmt.Errorf("look up the room %s: %w", room, err)
	}
	return origin, direct, true, nil
}

// syncPortal brings the origin chat's portal up to info: its name, and
// where the origin described the chat, its topic and picture. Each is
// sent only when it differs from what was last set. A chat without a
// portal is left alone: its room gets all of it when it is made.
func (b *asBridge) syncPortal(ctx context.Context, origin bridge.ChatRef, info portalInfo) error {
	// The common case, nothing changed, takes no lock.
	if p, ok, err := b.portal(ctx, origin); err != nil || !ok || !p.outdated(info) {
		return err
	}
	unlock, err := b.portalLocks.lock(ctx, origin.Connector+"\x00"+origin.ID)
	if err != nil {
		return err
	}
	defer unlock()
	p, ok, err := b.portal(ctx, origin) // another caller may have updated it
	if err != nil || !ok {
		return err
	}
	name, topic, avatarID := p.name, p.topic, p.avatarID
	bot, roomID := b.botIntent(), p.room
	var errs []error
	set := func(column, value string, typ event.Type, content any) {
		if _, err := bot.SendStateEvent(ctx, roomID, typ, "", content); err != nil {
			errs = append(errs, fmt.Errorf("set the %s of the room of %s: %w", column, origin, err))
			return
		}
		err := b.store.Write(ctx, func(tx *bridge.Tx) error {
			_, err := tx.Exec(`UPDATE matrix_portals SET `+column+` = ? WHERE connector = ? AND origin_connector = ? AND origin_chat = ?`,
				value, b.name, origin.Connector, origin.ID)
			return err
		})
		errs = append(errs, err)
	}
	if info.Name != "" && info.Name != name {
		set("name", info.Name, event.StateRoomName, &event.RoomNameEventContent{Name: info.Name})
	}
	if info.Described && info.Topic != topic {
		set("topic", info.Topic, event.StateTopic, &event.TopicEventContent{Topic: info.Topic})
	}
	if info.Described && info.AvatarID != avatarID {
		content := &event.RoomAvatarEventContent{} // no url: the picture was removed
		if info.Avatar != nil {
			uri, err := b.uploadAvatar(ctx, info.Avatar)
			if err != nil {
				return errors.Join(append(errs, fmt.Errorf("copy the picture of %s: %w", origin, err))...)
			}
			content.URL = uri.CUString()
		}
		set("avatar_id", info.AvatarID, event.StateRoomAvatar, content)
	}
	return errors.Join(errs...)
}

// maxAvatarBytes bounds a chat's or a contact's picture; WhatsApp's are
// well under it.
const maxAvatarBytes = 5 << 20

// uploadAvatar copies a picture to the content repository as the bot.
func (b *asBridge) uploadAvatar(ctx context.Context, m *bridge.Media) (id.ContentURI, error) {
	uri, _, err := uploadMedia(ctx, b.botIntent(), *m, maxAvatarBytes)
	return uri, err
}
