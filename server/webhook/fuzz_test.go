package webhook

import (
	"net/http/httptest"
	"testing"
)

func FuzzWebhookBody(f *testing.F) {
	f.Add([]byte(oneResult))
	f.Add([]byte(`[` + oneResult + `,{"entity":"user/alice","severity":"info","source":"s","reason":"r"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		results, err := DecodeResults(body, 10)
		if err == nil {
			for i := range results {
				if verr := results[i].validate(); verr != nil {
					t.Fatalf("accepted an invalid result: %v", verr)
				}
			}
		}

		eng := &fakeEngine{}
		w := httptest.NewRecorder()
		newHandler(t, eng).ServeHTTP(w, signed(string(body), now.Unix()))
		switch {
		case w.Code == 200 && (err != nil || len(eng.reports()) != len(results)):
			t.Fatalf("status 200 for a body DecodeResults rejects (%v)", err)
		case w.Code != 200 && w.Code != 400 && w.Code != 413:
			t.Fatalf("status %d", w.Code)
		}
	})
}
