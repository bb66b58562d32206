package decide

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/evaluate"
)

// Keys, all under the engine's KV.
const (
	keyPolicyCurrent = "policy/current" // → uint64 version, big endian
	keyPolicyPrefix  = "policy/v/"      // + %020d version → storedPolicy
	keyEntityPrefix  = "entity/"        // + entity name → evaluate.Entity
	keyHistoryPrefix = "history/"       // + entity + "/" + %020d ns + %08d → evaluate.Change
	keyAgentPrefix   = "agent/"         // + agent → agentRecord
	keyCutPrefix     = "cut/"           // + agent + "|" + peer → cut
	keyKillPrefix    = "kill-on-exec/"  // + sha256 → reason
	keyFeedPrefix    = "feed/"          // + feed → []policy.Indicator
)

// storedPolicy is one applied policy version.
type storedPolicy struct {
	Version     uint64 `json:"version"`
	Filename    string `json:"filename"`
	YAML        string `json:"yaml"`
	AppliedUnix int64  `json:"applied_unix"`
	AppliedBy   string `json:"applied_by"`
}

func (e *Engine) putJSON(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := e.kv.Set([]byte(key), b); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

func (e *Engine) scanJSON(prefix string, fn func(key string, raw []byte) error) error {
	err := e.kv.Scan([]byte(prefix), func(k, v []byte) error {
		return fn(strings.TrimPrefix(string(k), prefix), v)
	})
	if err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	return nil
}

func policyKey(v uint64) string { return fmt.Sprintf("%s%020d", keyPolicyPrefix, v) }

func (e *Engine) storePolicy(sp storedPolicy) error {
	if err := e.putJSON(policyKey(sp.Version), sp); err != nil {
		return err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], sp.Version)
	if err := e.kv.Set([]byte(keyPolicyCurrent), b[:]); err != nil {
		return fmt.Errorf("store %s: %w", keyPolicyCurrent, err)
	}
	return nil
}

func (e *Engine) loadPolicy(v uint64) (storedPolicy, bool, error) {
	var sp storedPolicy
	raw, ok, err := e.kv.Get([]byte(policyKey(v)))
	if err != nil || !ok {
		return sp, ok, err
	}
	if err := json.Unmarshal(raw, &sp); err != nil {
		return sp, false, fmt.Errorf("decode policy %d: %w", v, err)
	}
	return sp, true, nil
}

func (e *Engine) storeEntity(name string) error {
	ent, ok := e.book.Entity(name)
	if !ok {
		return nil
	}
	return e.putJSON(keyEntityPrefix+name, ent)
}

func (e *Engine) storeChange(c evaluate.Change) error {
	e.seq++
	key := fmt.Sprintf("%s%s/%020d%08d", keyHistoryPrefix, c.Entity, c.At.UnixNano(), e.seq%1e8)
	return e.putJSON(key, c)
}

// batchKV is a KV that stores many keys with few disk syncs, as
// server/store.Namespace does; storeAgents uses it when the KV has it.
type batchKV interface {
	SetMany(keys, values [][]byte) error
}

// storeAgents stores the records of agents whose tables changed, with one
// batch when the KV supports it: a policy change recompiles every agent's
// table, and one synced write per agent would hold the change back by a
// disk sync per agent.
func (e *Engine) storeAgents(rs []*agentRecord) error {
	bkv, ok := e.kv.(batchKV)
	if !ok || len(rs) < 2 {
		for _, r := range rs {
			if err := e.storeAgent(r); err != nil {
				return err
			}
		}
		return nil
	}
	keys, values := make([][]byte, len(rs)), make([][]byte, len(rs))
	for i, r := range rs {
		b, err := encodeAgent(r)
		if err != nil {
			return err
		}
		keys[i], values[i] = []byte(keyAgentPrefix+r.Name), b
	}
	if err := bkv.SetMany(keys, values); err != nil {
		return fmt.Errorf("store agents: %w", err)
	}
	return nil
}

func (e *Engine) storeAgent(r *agentRecord) error {
	b, err := encodeAgent(r)
	if err != nil {
		return err
	}
	if err := e.kv.Set([]byte(keyAgentPrefix+r.Name), b); err != nil {
		return fmt.Errorf("store %s: %w", keyAgentPrefix+r.Name, err)
	}
	return nil
}

func encodeAgent(r *agentRecord) ([]byte, error) {
	raw, err := proto.Marshal(r.Table)
	if err != nil {
		return nil, fmt.Errorf("encode table of %s: %w", r.Name, err)
	}
	r.TableRaw = raw
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", keyAgentPrefix+r.Name, err)
	}
	return b, nil
}

func cutKey(agent, peer string) string { return keyCutPrefix + agent + "|" + peer }

func (e *Engine) storeCut(agent, peer string, c cut) error {
	return e.putJSON(cutKey(agent, peer), c)
}

func (e *Engine) deleteCut(agent, peer string) error {
	if err := e.kv.Delete([]byte(cutKey(agent, peer))); err != nil {
		return fmt.Errorf("delete cut %s %s: %w", agent, peer, err)
	}
	return nil
}

// restore loads the persisted state. Called once, from New.
func (e *Engine) restore() error {
	if err := e.restorePolicy(); err != nil {
		return err
	}
	steps := []struct {
		prefix string
		load   func(key string, raw []byte) error
	}{
		{keyEntityPrefix, e.loadEntity},
		{keyAgentPrefix, e.loadAgent},
		{keyCutPrefix, e.loadCut},
		{keyKillPrefix, func(k string, v []byte) error { e.killOnExec[k] = string(v); return nil }},
		{keyFeedPrefix, e.loadFeed},
	}
	for _, s := range steps {
		if err := e.scanJSON(s.prefix, s.load); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	e.rebuildWorld()
	e.windows = e.windowKey(e.now())
	return nil
}

func (e *Engine) restorePolicy() error {
	p, _ := policy.Parse("builtin", []byte(builtinPolicy))
	e.policy = p
	raw, ok, err := e.kv.Get([]byte(keyPolicyCurrent))
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	if ok && len(raw) == 8 {
		v := binary.BigEndian.Uint64(raw)
		sp, found, err := e.loadPolicy(v)
		if err != nil {
			return fmt.Errorf("restore policy %d: %w", v, err)
		}
		if !found {
			return fmt.Errorf("restore policy %d: version missing from the store", v)
		}
		parsed, errs := policy.Parse(sp.Filename, []byte(sp.YAML))
		if len(errs) > 0 {
			return fmt.Errorf("restore policy %d: %s", v, errs[0].Error())
		}
		e.policy, e.policyVersion = parsed, v
	}
	e.book = evaluate.NewBook(e.policy)
	e.detect.SetPolicy(e.policy)
	return nil
}

func (e *Engine) loadEntity(_ string, raw []byte) error {
	var ent evaluate.Entity
	if err := json.Unmarshal(raw, &ent); err != nil {
		return fmt.Errorf("decode entity: %w", err)
	}
	e.book.Load(ent)
	return nil
}

func (e *Engine) loadAgent(name string, raw []byte) error {
	var r agentRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode agent %s: %w", name, err)
	}
	r.Table = &vigilpb.VerdictTable{}
	if err := proto.Unmarshal(r.TableRaw, r.Table); err != nil {
		return fmt.Errorf("decode table of %s: %w", name, err)
	}
	e.agents[name] = &r
	return nil
}

func (e *Engine) loadCut(key string, raw []byte) error {
	agent, peer, ok := strings.Cut(key, "|")
	var c cut
	if !ok {
		return fmt.Errorf("decode cut %s: key has no agent|peer form", key)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decode cut %s: %w", key, err)
	}
	e.cutsOf(agent)[peer] = c
	return nil
}

func (e *Engine) loadFeed(name string, raw []byte) error {
	var inds []policy.Indicator
	if err := json.Unmarshal(raw, &inds); err != nil {
		return fmt.Errorf("decode feed %s: %w", name, err)
	}
	e.detect.SetFeed(name, inds)
	return nil
}

func (e *Engine) cutsOf(agent string) map[string]cut {
	m, ok := e.cuts[agent]
	if !ok {
		m = map[string]cut{}
		e.cuts[agent] = m
	}
	return m
}
