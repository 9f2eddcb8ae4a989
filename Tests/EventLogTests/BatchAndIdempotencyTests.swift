import Testing

@testable import EventLog

@Suite("Batches and idempotency")
struct BatchAndIdempotencyTests {
    @Test("a batch with an invalid event in the middle is rejected with its index and leaves nothing")
    func invalidEventRejectsWholeBatch() async throws {
        try await withTemporaryLog { log, _ in
            _ = try await log.append(NewEvent(topic: "before", data: .text("0")))
            let batch = [
                NewEvent(topic: "orders/1", data: .text("a")),
                NewEvent(topic: "orders/2", data: .text("b")),
                NewEvent(topic: "bad topic", data: .text("c")),
                NewEvent(topic: "orders/3", data: .text("d")),
            ]
            let error = await #expect(throws: EventLogError.self) { try await log.append(batch: batch) }
            #expect(error?.code == .invalidTopic)
            #expect(error?.index == 2)
            #expect(log.head == 1)
            #expect(try await log.readAll().map(\.topic) == ["before"])
            #expect(try await log.append(NewEvent(topic: "after", data: .text("1"))).event.id == 2)
        }
    }

    @Test("a batch with an idempotency conflict in the middle leaves no trace of the others")
    func idempotencyConflictRejectsWholeBatch() async throws {
        try await withTemporaryLog { log, directory in
            let original = try await log.append(NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k"))
            #expect(original.event.id == 1)
            let batch = [
                NewEvent(topic: "orders/2", data: .text("a"), idempotencyKey: "k2"),
                NewEvent(topic: "orders/3", data: .text("b")),
                NewEvent(topic: "orders/1", data: .text("v2"), idempotencyKey: "k"),
                NewEvent(topic: "orders/4", data: .text("c")),
            ]
            let error = await #expect(throws: EventLogError.self) { try await log.append(batch: batch) }
            #expect(error?.code == .idempotencyConflict)
            #expect(error?.index == 2)
            #expect(log.head == 1)
            #expect(try await log.readAll() == [original.event])
            #expect(try sqlite3(directory.path("events.db"), "SELECT count(*) FROM events;") == "1\n")
            // The rolled-back rows used no ids and left no idempotency key behind.
            let retried = try await log.append(batch: [batch[0], batch[1], batch[3]])
            #expect(retried.map(\.event.id) == [2, 3, 4])
            #expect(retried.map(\.replayed) == [false, false, false])
        }
    }

    @Test("a failing request in a group commit does not fail the requests committed with it")
    func failedRequestIsIsolatedInGroupCommit() async throws {
        try await withTemporaryLog { log, _ in
            _ = try await log.append(NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k"))
            let outcomes = await withTaskGroup(of: (Int, Result<Int64, EventLogError>).self) { group in
                for index in 0..<40 {
                    group.addTask {
                        let event =
                            index == 20
                            ? NewEvent(topic: "orders/1", data: .text("conflict"), idempotencyKey: "k")
                            : NewEvent(topic: "others/\(index)", data: .text("\(index)"))
                        do {
                            return (index, .success(try await log.append(event).event.id))
                        } catch let error as EventLogError {
                            return (index, .failure(error))
                        } catch {
                            return (index, .failure(EventLogError(.corrupt, "unexpected \(error)")))
                        }
                    }
                }
                var outcomes: [Int: Result<Int64, EventLogError>] = [:]
                for await (index, outcome) in group { outcomes[index] = outcome }
                return outcomes
            }
            var ids: [Int64] = []
            for (index, outcome) in outcomes {
                switch outcome {
                case .success(let id):
                    #expect(index != 20)
                    ids.append(id)
                case .failure(let error):
                    #expect(index == 20)
                    #expect(error.code == .idempotencyConflict)
                    #expect(error.index == nil)
                }
            }
            #expect(ids.sorted() == Array(2...40))
            let events = try await log.readAll()
            #expect(events.map(\.id) == Array(1...40))
            #expect(events.filter { $0.topic == "orders/1" }.count == 1)
        }
    }

    @Test("an idempotent retry returns the original event with replayed set and appends nothing")
    func idempotentRetryReplays() async throws {
        try await withTemporaryLog { log, _ in
            let event = NewEvent(
                topic: "orders/1", type: "created", key: "o1", data: .json("{}"), idempotencyKey: "req-1")
            let first = try await log.append(event)
            #expect(first.replayed == false)
            #expect(first.event.id == 1)
            try await Task.sleep(for: .milliseconds(5))
            let retry = try await log.append(event)
            #expect(retry.replayed == true)
            #expect(retry.event == first.event)
            #expect(log.head == 1)
            #expect(try await log.readAll() == [first.event])

            // In a batch, the replayed line keeps its original id and the new line gets the next one.
            let batch = try await log.append(batch: [event, NewEvent(topic: "orders/1", data: .text("next"))])
            #expect(batch.map(\.replayed) == [true, false])
            #expect(batch.map(\.event.id) == [1, 2])
            try #require(!batch.isEmpty)
            #expect(batch[0].event == first.event)
        }
    }

    @Test(
        "the same idempotency key on the same topic with a different event is a conflict",
        arguments: [
            NewEvent(topic: "orders/1", type: "created", key: "o1", data: .json("{\"a\":2}"), idempotencyKey: "req-1"),
            NewEvent(topic: "orders/1", type: "updated", key: "o1", data: .json("{\"a\":1}"), idempotencyKey: "req-1"),
            NewEvent(topic: "orders/1", type: "created", key: "o2", data: .json("{\"a\":1}"), idempotencyKey: "req-1"),
            NewEvent(topic: "orders/1", type: "created", key: nil, data: .json("{\"a\":1}"), idempotencyKey: "req-1"),
            NewEvent(topic: "orders/1", type: "created", key: "o1", data: .text("{\"a\":1}"), idempotencyKey: "req-1"),
            NewEvent(topic: "orders/1", type: "created", key: "o1", data: nil, idempotencyKey: "req-1"),
        ])
    func idempotencyConflict(conflicting: NewEvent) async throws {
        try await withTemporaryLog { log, _ in
            let original = NewEvent(
                topic: "orders/1", type: "created", key: "o1", data: .json("{\"a\":1}"), idempotencyKey: "req-1"
            )
            let first = try await log.append(original)
            let error = await #expect(throws: EventLogError.self) { try await log.append(conflicting) }
            #expect(error?.code == .idempotencyConflict)
            #expect(error?.index == nil)
            #expect(try await log.readAll() == [first.event])
        }
    }

    @Test("the same idempotency key on another topic is independent")
    func idempotencyKeyIsPerTopic() async throws {
        try await withTemporaryLog { log, _ in
            let first = try await log.append(NewEvent(topic: "orders/1", data: .text("a"), idempotencyKey: "k"))
            let other = try await log.append(NewEvent(topic: "orders/2", data: .text("b"), idempotencyKey: "k"))
            #expect(first == AppendResult(event: first.event, replayed: false))
            #expect(other.replayed == false)
            #expect(other.event.id == 2)
            let retryOther = try await log.append(NewEvent(topic: "orders/2", data: .text("b"), idempotencyKey: "k"))
            #expect(retryOther == AppendResult(event: other.event, replayed: true))
            let retryFirst = try await log.append(NewEvent(topic: "orders/1", data: .text("a"), idempotencyKey: "k"))
            #expect(retryFirst == AppendResult(event: first.event, replayed: true))
            #expect(try await log.readAll().map(\.id) == [1, 2])
        }
    }

    @Test("concurrent retries of one request append it exactly once")
    func concurrentRetriesAppendOnce() async throws {
        try await withTemporaryLog { log, _ in
            let event = NewEvent(topic: "payments/9", data: .text("charge"), idempotencyKey: "pay-9")
            let results = try await withThrowingTaskGroup(of: AppendResult.self) { group in
                for _ in 0..<20 { group.addTask { try await log.append(event) } }
                var results: [AppendResult] = []
                for try await result in group { results.append(result) }
                return results
            }
            #expect(Set(results.map(\.event)).count == 1)
            #expect(results.filter { !$0.replayed }.count == 1)
            #expect(results.first?.event.id == 1)
            #expect(try await log.readAll().count == 1)
        }
    }
}
