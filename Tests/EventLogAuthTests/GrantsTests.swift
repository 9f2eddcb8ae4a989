import EventLogAuth
import EventLogWire
import Testing

@Suite("Grants: what a grant covers")
struct GrantsTests {
    private func grants(publish: [String] = [], subscribe: [String] = [], admin: Bool = false) throws -> Grants {
        try Grants(publish: publish, subscribe: subscribe, admin: admin)
    }

    @Test(
        "subscribing to a selector needs one subscribe grant that covers all of it",
        arguments: [
            // an exact topic covers only itself
            (["orders/1"], "orders/1", true), (["orders/1"], "orders/10", false), (["orders/1"], "orders/1/*", false),
            (["orders/1"], "orders/1/2", false), (["orders/1"], "orders/*", false), (["orders/1"], "*", false),
            (["orders/1"], "orders", false),
            // a prefix covers the topics below it and narrower prefixes, never the prefix topic itself
            (["orders/1/*"], "orders/1", false), (["orders/1/*"], "orders/1/2", true),
            (["orders/1/*"], "orders/1/*", true), (["orders/1/*"], "orders/*", false),
            (["orders/*"], "orders/1", true), (["orders/*"], "orders/1/*", true), (["orders/*"], "orders/1/2", true),
            (["orders/*"], "orders/*", true), (["orders/*"], "orders", false), (["orders/*"], "ordersX/1", false),
            (["orders/*"], "ordersX/*", false), (["orders/*"], "order/1", false), (["orders/*"], "*", false),
            // everything only by everything
            (["*"], "*", true), (["*"], "orders/1/*", true), (["*"], "orders", true),
            // several grants do not add up to a wider selector
            (["orders/1", "orders/2"], "orders/*", false), (["orders/*", "users/*"], "*", false),
            (["users/*", "orders/1/*"], "orders/1/x", true), (["users/*", "orders/1"], "orders/1", true),
            // no grant covers nothing
            ([], "orders/1", false), ([], "*", false),
        ] as [([String], String, Bool)]
    )
    func subscribeCoverage(granted: [String], selector: String, allowed: Bool) throws {
        let grants = try grants(subscribe: granted)
        #expect(grants.maySubscribe(try Selector(parsing: selector)) == allowed)
        // publish grants never give a right to read
        #expect(try self.grants(publish: granted).maySubscribe(try Selector(parsing: selector)) == false)
    }

    @Test(
        "publishing to a topic needs one publish grant that matches it",
        arguments: [
            (["orders/*"], "orders/1", true), (["orders/*"], "orders/1/x", true), (["orders/*"], "orders", false),
            (["orders/*"], "ordersX/1", false), (["orders/1"], "orders/1", true), (["orders/1"], "orders/10", false),
            (["orders/1"], "orders/1/2", false), (["orders/1/*"], "orders/1", false),
            (["orders/1/*"], "orders/1/2", true), (["*"], "orders", true), (["*"], "a/b/c/d", true),
            (["users/*", "orders/1"], "orders/1", true), ([], "orders/1", false),
        ] as [([String], String, Bool)]
    )
    func publishCoverage(granted: [String], topic: String, allowed: Bool) throws {
        #expect(try grants(publish: granted).mayPublish(topic) == allowed)
        // subscribe grants never give a right to publish
        #expect(try grants(subscribe: granted).mayPublish(topic) == false)
    }

    @Test(
        "reading (and listing) a topic needs a subscribe grant that matches it",
        arguments: [
            (["orders/1/*"], "orders/1", false), (["orders/1/*"], "orders/1/2", true), (["orders/*"], "orders", false),
            (["orders/*"], "orders/9/9", true), (["orders/1"], "orders/10", false), (["orders/1"], "orders/1", true),
            (["*"], "anything", true), ([], "orders/1", false),
        ] as [([String], String, Bool)]
    )
    func readCoverage(granted: [String], topic: String, allowed: Bool) throws {
        #expect(try grants(subscribe: granted).mayRead(topic) == allowed)
        #expect(try grants(publish: granted).mayRead(topic) == false)
    }

    @Test("parsing grant texts keeps their kinds and order")
    func parsing() throws {
        let parsed = try Grants(publish: ["orders/*", "*"], subscribe: ["orders/1", "public/*"], admin: true)
        #expect(parsed.publish == [.prefix("orders"), .all])
        #expect(parsed.subscribe == [.topic("orders/1"), .prefix("public")])
        #expect(parsed.admin == true)
        #expect(try Grants(publish: [String](), subscribe: []) == Grants.nothing)
    }

    @Test(
        "a bad grant text is invalid_selector, naming it",
        arguments: [
            (["orders//1"], [String](), "invalid selector \"orders//1\": it has an empty segment"),
            ([], ["orders/*/x"], "invalid selector \"orders/*/x\": byte 0x2a is not allowed"),
            (["ok/1"], [""], "invalid selector \"\": it is empty"),
            ([], ["orders/"], "invalid selector \"orders/\": it has an empty segment"),
        ] as [([String], [String], String)]
    )
    func badGrant(publish: [String], subscribe: [String], message: String) {
        #expect(throws: EventLogError(.invalidSelector, message)) {
            try Grants(publish: publish, subscribe: subscribe)
        }
    }

    @Test("no grants: nothing is allowed, and the first selector is the one refused")
    func empty() throws {
        let none = Grants()
        #expect(none == Grants.nothing)
        #expect(none.publish.isEmpty && none.subscribe.isEmpty && !none.admin)
        #expect(!none.mayPublish("orders/1"))
        #expect(!none.maySubscribe(.all))
        #expect(!none.mayRead("orders/1"))
        #expect(none.firstForbidden(try SelectorSet(parsing: ["orders/1"])) == .topic("orders/1"))
        #expect(none.firstForbidden(topics: ["a", "b"])! == (0, "a"))
        // nothing asked: nothing refused
        #expect(none.firstForbidden(SelectorSet([])) == nil)
        #expect(none.firstForbidden(topics: []) == nil)
    }

    @Test("everything: every right, on every topic")
    func everything() {
        let all = Grants.everything
        #expect(all == Grants(publish: [.all], subscribe: [.all], admin: true))
        #expect(all.mayPublish("orders/1/2"))
        #expect(all.maySubscribe(.all))
        #expect(all.mayRead("x"))
        #expect(all.firstForbidden(SelectorSet.all) == nil)
        #expect(all.firstForbidden(topics: ["a", "b/c"]) == nil)
    }

    @Test("publishing with * covers every topic, nested or not")
    func publishEverywhere() throws {
        let grants = try grants(publish: ["*"])
        for topic in ["a", "orders/1", "orders/1/2/3", "x.y:z"] {
            #expect(grants.mayPublish(topic), "\(topic)")
        }
        #expect(grants.firstForbidden(topics: ["a", "b", "c/d"]) == nil)
        #expect(!grants.maySubscribe(.all))
    }

    @Test("union: the grants of both, in order; admin when either has it")
    func union() throws {
        let a = try grants(publish: ["orders/*"], subscribe: ["orders/1"])
        let b = try grants(publish: ["users/1"], subscribe: ["public/*"], admin: true)
        let both = a.union(b)
        #expect(both.publish == [.prefix("orders"), .topic("users/1")])
        #expect(both.subscribe == [.topic("orders/1"), .prefix("public")])
        #expect(both.admin == true)
        #expect(both.mayPublish("users/1") && both.mayPublish("orders/7"))
        #expect(both.maySubscribe(try Selector(parsing: "public/x/*")) && both.maySubscribe(.topic("orders/1")))
        #expect(!both.maySubscribe(.topic("orders/2")))
        #expect(a.union(.nothing) == a)
        #expect(Grants.nothing.union(.nothing).admin == false)
        #expect(b.union(a).admin == true)
    }

    @Test("firstForbidden(topics:) gives the index and topic of the first event that may not be published")
    func firstForbiddenTopic() throws {
        let grants = try grants(publish: ["orders/*", "audit/1"])
        let refused = try #require(grants.firstForbidden(topics: ["orders/1", "audit/1", "orders/2", "users/1", "x"]))
        #expect(refused.index == 3)
        #expect(refused.topic == "users/1")
        let atZero = try #require(grants.firstForbidden(topics: ["orders", "orders/1"]))
        #expect(atZero == (0, "orders"))
        let last = try #require(grants.firstForbidden(topics: ["orders/1", "orders/2", "audit/10"]))
        #expect(last == (2, "audit/10"))
        #expect(grants.firstForbidden(topics: ["orders/1", "audit/1", "orders/1/2"]) == nil)
    }

    @Test("firstForbidden(selectors) gives the first refused selector of the (sorted, reduced) set")
    func firstForbiddenSelector() throws {
        let grants = try grants(subscribe: ["orders/*"])
        // SelectorSet sorts: orders/1, users/1, zeta/*
        let set = try SelectorSet(parsing: ["zeta/*", "users/1", "orders/1"])
        #expect(set.selectors.map(\.description) == ["orders/1", "users/1", "zeta/*"])
        #expect(grants.firstForbidden(set) == .topic("users/1"))
        #expect(grants.firstForbidden(try SelectorSet(parsing: ["orders/1", "orders/2/*"])) == nil)
        #expect(grants.firstForbidden(try SelectorSet(parsing: ["orders/1", "orders"])) == .topic("orders"))
    }
}

@Suite("Principal: 401 for the anonymous caller, 403 for a known one")
struct PrincipalTests {
    private let anonymous = Principal(
        kind: .anonymous, name: "anonymous", grants: Grants(subscribe: [.prefix("public")]))
    private let token = Principal(
        kind: .token, name: "alice", grants: Grants(publish: [.prefix("orders")], subscribe: [.prefix("orders")]),
        expiresAt: testNow)

    @Test("only the anonymous caller is unauthenticated")
    func unauthenticated() {
        #expect(anonymous.isUnauthenticated)
        #expect(!token.isUnauthenticated)
        #expect(!Principal(kind: .apiKey, name: "k", grants: .nothing).isUnauthenticated)
        #expect(!Principal(kind: .open, name: "open", grants: .everything).isUnauthenticated)
    }

    @Test("anonymous: a subscription not covered is 401 authentication_required, naming the selector")
    func anonymousSubscribe() throws {
        #expect(anonymous.authorizeSubscribe(try SelectorSet(parsing: ["public/1", "public/news/*"])) == nil)
        let failure = try #require(anonymous.authorizeSubscribe(try SelectorSet(parsing: ["public/1", "orders/1"])))
        #expect(
            failure
                == AuthFailure(
                    .authenticationRequired,
                    "not allowed to read \"orders/1\"; present a token (Authorization: Bearer)", selector: "orders/1"))
        #expect(failure.code.httpStatus == 401)
        #expect(failure.index == nil)
    }

    @Test("anonymous: publishing is 401 authentication_required, with the topic and the batch index")
    func anonymousPublish() throws {
        let single = try #require(anonymous.authorizePublish(["public/1"], batch: false))
        #expect(
            single
                == AuthFailure(
                    .authenticationRequired,
                    "not allowed to publish to \"public/1\"; present a token (Authorization: Bearer)",
                    selector: "public/1"))
        let batch = try #require(anonymous.authorizePublish(["public/1", "public/2"], batch: true))
        #expect(
            batch
                == AuthFailure(
                    .authenticationRequired,
                    "line 1: not allowed to publish to \"public/1\"; present a token (Authorization: Bearer)",
                    selector: "public/1", index: 0))
    }

    @Test("anonymous: admin is 401 authentication_required")
    func anonymousAdmin() throws {
        let failure = try #require(anonymous.authorizeAdmin("/metrics"))
        #expect(
            failure
                == AuthFailure(
                    .authenticationRequired, "/metrics needs the admin grant; present a token (Authorization: Bearer)"))
        #expect(failure.selector == nil && failure.index == nil)
    }

    @Test("a token: a subscription not covered is 403 forbidden_topic with the first refused selector")
    func tokenSubscribe() throws {
        #expect(token.authorizeSubscribe(try SelectorSet(parsing: ["orders/1", "orders/2/*"])) == nil)
        let failure = try #require(token.authorizeSubscribe(try SelectorSet(parsing: ["orders/1", "users/*", "x"])))
        #expect(failure == AuthFailure(.forbiddenTopic, "not allowed to read \"users/*\"", selector: "users/*"))
        #expect(failure.code.httpStatus == 403)
        let everything = try #require(token.authorizeSubscribe(.all))
        #expect(everything == AuthFailure(.forbiddenTopic, "not allowed to read \"*\"", selector: "*"))
    }

    @Test("a token: publishing is 403 forbidden_topic; a batch names the zero-based index and the line")
    func tokenPublish() throws {
        #expect(token.authorizePublish(["orders/1", "orders/2/3"], batch: true) == nil)
        let batch = try #require(token.authorizePublish(["orders/1", "orders/2", "users/1", "users/2"], batch: true))
        #expect(
            batch
                == AuthFailure(
                    .forbiddenTopic, "line 3: not allowed to publish to \"users/1\"", selector: "users/1", index: 2))
        let single = try #require(token.authorizePublish(["orders"], batch: false))
        #expect(single == AuthFailure(.forbiddenTopic, "not allowed to publish to \"orders\"", selector: "orders"))
        #expect(single.index == nil)
    }

    @Test("a token: admin is 403 forbidden without the admin grant, allowed with it")
    func tokenAdmin() throws {
        #expect(token.authorizeAdmin("/metrics") == AuthFailure(.forbidden, "/metrics needs the admin grant"))
        #expect(AuthFailure(.forbidden, "").code.httpStatus == 403)
        var admin = token
        admin.grants.admin = true
        #expect(admin.authorizeAdmin("/metrics") == nil)
    }

    @Test("an API key caller is refused like a token: 403")
    func apiKeyRefusal() throws {
        let key = Principal(kind: .apiKey, name: "orders-backend", grants: Grants(publish: [.prefix("orders")]))
        #expect(
            key.authorizePublish(["users/1"], batch: false)
                == AuthFailure(.forbiddenTopic, "not allowed to publish to \"users/1\"", selector: "users/1"))
        #expect(key.authorizeAdmin("/metrics") == AuthFailure(.forbidden, "/metrics needs the admin grant"))
    }

    @Test("the open principal (auth off) is allowed everything")
    func open() throws {
        let open = Principal(kind: .open, name: "open", grants: .everything)
        #expect(open.authorizeSubscribe(try SelectorSet(parsing: ["*", "a/1"])) == nil)
        #expect(open.authorizePublish(["a", "b/c"], batch: true) == nil)
        #expect(open.authorizeAdmin("/metrics") == nil)
    }
}
