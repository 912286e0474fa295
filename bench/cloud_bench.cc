// CloudStorage benchmark against a moto_server it starts itself (S3 + SQS API on
// loopback). Prints one JSON object: write throughput with 1 and 16 writers next to a
// raw signed S3 PUT loop of the same bytes (the reference, measured in the same run),
// and the requests one message lifecycle costs.
//
// usage: cloud_bench [--seconds S] [--size BYTES]
#include <atomic>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "cloud/http.h"
#include "core/record.h"
#include "slimta/cloud_storage.h"
#include "support/moto_server.h"
#include "support/test_util.h"

namespace {

using slimta::bench::rate;

}  // namespace

int main(int argc, char** argv) {
  using namespace slimta;
  double seconds = 5;
  size_t size = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--seconds")
      seconds = std::stod(argv[i + 1]);
    else if (arg == "--size")
      size = std::stoul(argv[i + 1]);
    else {
      std::cerr << "unknown option " << arg << "\n";
      return 2;
    }
  }
  nlohmann::json out;
  try {
    testing::MotoServer server;
    server.create_bucket("bench");
    std::string queue = server.create_queue("bench");
    Envelope env = testing::sample_envelope(1, size);
    std::string bytes = record::encode(record::initial_metadata(env, 0), &env);
    out["record_bytes"] = bytes.size();

    AwsOptions aws = server.aws();
    cloud::Http http(30, aws.region, {aws.access_key_id, aws.secret_access_key, ""});
    CloudStorage storage(SimpleStorageService("bench", 30, "w/", aws),
                         SimpleQueueService(queue, 30, 0.1, aws));
    CloudStorage s3_only(SimpleStorageService("bench", 30, "s/", aws));
    for (int threads : {1, 16}) {
      std::string key = std::to_string(threads) + (threads == 1 ? "_writer" : "_writers");
      out["raw_s3_put_per_s"][key] = rate(threads, seconds, [&](int t, size_t i) {
        auto req = cloud::make_request(
            "PUT", server.endpoint() + "/bench/raw/" + std::to_string(t) + "-" + std::to_string(i),
            "s3", "raw");
        req.headers = {{"Content-Type", "application/octet-stream"}};
        req.body = bytes;
        http.send(req);
        return true;
      });
      std::string raw_queue = server.create_queue("raw" + std::to_string(threads));
      out["raw_sqs_send_per_s"][key] = rate(threads, seconds, [&](int, size_t i) {
        auto req = cloud::make_request("POST", server.endpoint() + "/", "sqs", "raw");
        req.headers = {{"Content-Type", "application/x-amz-json-1.0"},
                       {"X-Amz-Target", "AmazonSQS.SendMessage"}};
        req.body =
            nlohmann::json{{"QueueUrl", raw_queue}, {"MessageBody", std::to_string(i)}}.dump();
        http.send(req);
        return true;
      });
      out["write_per_s"][key] = rate(threads, seconds, [&](int, size_t) {
        storage.write(env, 1);
        return true;
      });
      out["write_without_sqs_per_s"][key] = rate(threads, seconds, [&](int, size_t) {
        s3_only.write(env, 1);
        return true;
      });
      out["write_vs_raw_put"][key] =
          out["write_per_s"][key].get<double>() / out["raw_s3_put_per_s"][key].get<double>();
    }

    // One lifecycle: write; two failed attempts (increment_attempts + set_timestamp);
    // get; remove.
    CloudStorage counted(SimpleStorageService("bench", 30, "c/", aws),
                         SimpleQueueService(queue, 30, 0.1, aws));
    std::string id = counted.write(env, 1);
    auto after_write = counted.request_counts();
    for (int i = 0; i < 2; ++i) {
      counted.increment_attempts(id);
      counted.set_timestamp(id, 2 + i);
    }
    counted.get(id);
    counted.remove(id);
    uint64_t total = 0, write_total = 0;
    for (const auto& [k, v] : counted.request_counts()) {
      out["lifecycle_requests"][k] = v;
      total += v;
    }
    for (const auto& [k, v] : after_write) write_total += v;
    out["lifecycle_requests_total"] = total;
    out["write_requests"] = write_total;
  } catch (const std::exception& e) {
    std::cerr << "cloud_bench: " << e.what() << "\n";
    return 1;
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}
