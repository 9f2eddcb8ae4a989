import Foundation
import NIOCore

/// A subscription to a set of topics: an asynchronous sequence of ``SubscriptionElement``s that reconnects and
/// resumes by itself. Create one with ``EventLogClient/subscribe(topics:from:transport:)``.
///
/// Each iterator runs its own connection in a task of its own, and hands elements over through a bounded buffer:
/// when ``EventLogClient/Configuration/subscriptionBufferSize`` elements wait for the consumer, the task stops
/// reading from the connection, so the server's flow control (not memory) absorbs a slow consumer. Dropping the
/// iterator or cancelling the consuming task cancels that task, which closes the connection.
public struct Subscription: AsyncSequence, Sendable {
    /// The elements: events and stream signals.
    public typealias Element = SubscriptionElement

    /// The client that opens the connections.
    public let client: EventLogClient
    /// The topics or selectors subscribed to.
    public let topics: [String]
    /// Where the subscription starts.
    public let start: StartPosition
    /// The transport.
    public let transport: Transport

    init(client: EventLogClient, topics: [String], start: StartPosition, transport: Transport) {
        self.client = client
        self.topics = topics
        self.start = start
        self.transport = transport
    }

    typealias Producer = NIOThrowingAsyncSequenceProducer<
        SubscriptionElement,
        any Error,
        NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark,
        SubscriptionDemand
    >

    /// Starts a connection and returns an iterator over its elements.
    public func makeAsyncIterator() -> AsyncIterator {
        let demand = SubscriptionDemand()
        let highWatermark = Swift.max(self.client.configuration.subscriptionBufferSize, 1)
        let producer = Producer.makeSequence(
            backPressureStrategy: .init(lowWatermark: Swift.max(highWatermark / 2, 1), highWatermark: highWatermark),
            finishOnDeinit: true,
            delegate: demand
        )
        let sink = SubscriptionSink(source: producer.source, demand: demand)
        let connector = SubscriptionConnector(
            client: self.client,
            topics: self.topics,
            start: self.start,
            transport: self.transport,
            sink: sink
        )
        let task = Task {
            do {
                try await connector.run()
                sink.finish()
            } catch {
                sink.finish(error)
            }
        }
        demand.attach(task)
        return AsyncIterator(base: producer.sequence.makeAsyncIterator())
    }

    /// Reads elements until `count` events arrived, and returns every element read (events and signals).
    ///
    /// Opens its own connection, which is closed on return. Handy in tests and for `tail --count`.
    /// - Throws: ``EventLogClientError/Code/timeout`` when fewer than `count` events arrived within `timeout`,
    ///   or the error that ended the subscription.
    public func collect(events count: Int, timeout: Duration) async throws -> [SubscriptionElement] {
        guard count > 0 else {
            return []
        }
        return try await withThrowingTaskGroup(of: [SubscriptionElement]?.self) { group in
            group.addTask {
                var elements: [SubscriptionElement] = []
                var events = 0
                for try await element in self {
                    elements.append(element)
                    if case .event = element {
                        events += 1
                        if events == count {
                            break
                        }
                    }
                }
                return elements
            }
            let clock = self.client.configuration.clock
            group.addTask {
                try await clock.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let elements = try await group.next() ?? nil else {
                throw EventLogClientError(.timeout, message: "fewer than \(count) events within \(timeout)")
            }
            return elements
        }
    }

    /// Iterates over a subscription. Not `Sendable`: use it from one task.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator

        /// The next element, or `nil` after the subscription ended.
        ///
        /// - Throws: ``EventLogClientError`` when the subscription cannot continue, `CancellationError` when the
        ///   consuming task was cancelled.
        public mutating func next() async throws -> SubscriptionElement? {
            try await self.base.next()
        }
    }
}

/// Where the connection task puts its elements; it waits while the consumer is behind.
struct SubscriptionSink: Sendable {
    let source: Subscription.Producer.Source
    let demand: SubscriptionDemand

    /// Hands one element to the consumer, waiting while the buffer is full.
    ///
    /// - Throws: `CancellationError` when the consumer is gone.
    func yield(_ element: SubscriptionElement) async throws {
        try await self.yield(contentsOf: CollectionOfOne(element))
    }

    /// Hands several elements to the consumer at once (what one read produced), waiting while the buffer is full.
    func yield(contentsOf elements: some Sequence<SubscriptionElement>) async throws {
        self.demand.willYield()
        switch self.source.yield(contentsOf: elements) {
        case .produceMore:
            return
        case .stopProducing:
            await self.demand.waitForDemand()
            try Task.checkCancellation()
        case .dropped:
            throw CancellationError()
        }
    }

    func finish() {
        self.source.finish()
    }

    func finish(_ error: any Error) {
        self.source.finish(error)
    }
}

/// The producer's delegate: wakes the connection task when the consumer wants more, and cancels it when the
/// consumer is gone.
final class SubscriptionDemand: NIOAsyncSequenceProducerDelegate, @unchecked Sendable {
    // Guards every property below; never held across an await.
    private let lock = NSLock()
    private var hasDemand = true
    private var terminated = false
    private var waiter: CheckedContinuation<Void, Never>?
    private var task: Task<Void, Never>?

    func attach(_ task: Task<Void, Never>) {
        let cancel = self.lock.withLock {
            if self.terminated {
                return true
            }
            self.task = task
            return false
        }
        if cancel {
            task.cancel()
        }
    }

    /// Called before each yield: a `produceMore` that arrives after it answers that yield's `stopProducing`.
    func willYield() {
        self.lock.withLock { self.hasDemand = false }
    }

    func waitForDemand() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.lock.withLock {
                    if self.hasDemand || self.terminated || Task.isCancelled {
                        return true
                    }
                    self.waiter = continuation
                    return false
                }
                if resumeNow {
                    continuation.resume()
                }
            }
        } onCancel: {
            self.wake()
        }
    }

    func produceMore() {
        let waiter = self.lock.withLock {
            self.hasDemand = true
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume()
    }

    func didTerminate() {
        let (waiter, task) = self.lock.withLock {
            self.terminated = true
            defer {
                self.waiter = nil
                self.task = nil
            }
            return (self.waiter, self.task)
        }
        task?.cancel()
        waiter?.resume()
    }

    private func wake() {
        let waiter = self.lock.withLock {
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume()
    }
}
