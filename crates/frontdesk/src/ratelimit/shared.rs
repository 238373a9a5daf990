//! The sliding log in Redis, shared by every instance: one sorted set per bucket
//! (score and member: the request's time, plus a random nonce so two requests in the
//! same millisecond are two entries), trimmed, counted and appended by one Lua script,
//! so a decision is atomic and one round trip (`EVALSHA`; the script is sent again
//! only when Redis has forgotten it).

use std::sync::Arc;

use super::{Decision, Mode, Policy};
use crate::redis_link::RedisLink;

const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local mode = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local allowed = 0
if mode == 'add' or (mode == 'hit' and n < limit) then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  n = n + 1
  allowed = 1
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  if mode == 'add' and n > limit then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - limit - 1)
    n = limit
  end
elseif mode == 'peek' and n < limit then
  allowed = 1
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if reset < 0 then reset = 0 end
return {allowed, n, reset}
"#;

pub struct RedisLimiter {
    link: Arc<RedisLink>,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            script: redis::Script::new(SCRIPT),
        }
    }

    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    pub async fn decide(
        &self,
        policy: &Policy,
        bucket: &str,
        mode: Mode,
        now_ms: u64,
    ) -> redis::RedisResult<Decision> {
        let key = self.link.key(&format!("rl:{bucket}"));
        let nonce = format!("{now_ms}-{:016x}", rand::random::<u64>());
        let mut conn = self.link.conn();
        let result: redis::RedisResult<(i64, i64, i64)> = self
            .script
            .key(key)
            .arg(now_ms)
            .arg(policy.window_ms)
            .arg(policy.limit)
            .arg(mode.as_str())
            .arg(nonce)
            .invoke_async(&mut conn)
            .await;
        self.link.record(&result);
        let (allowed, n, reset) = result?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: policy.limit,
            remaining: policy.limit.saturating_sub(n.max(0) as u32),
            reset_ms: reset.max(0) as u64,
        })
    }
}
