(ns sample-app.core
  "Sample app for zero-downtime deploy tests.

  Every response carries X-App-Version (from resources/VERSION) and, when
  APP_REVISION is set, X-App-Revision, so a load client can tell which
  deployed version answered each request."
  (:require [clojure.java.io :as io]
            [clojure.string :as str]
            [compojure.core :refer [defroutes GET POST]]
            [compojure.route :as route]
            [ring.adapter.jetty :refer [run-jetty]]
            [ring.util.codec :as codec])
  (:gen-class))

(def app-version
  ;; Read once at namespace load; the file is baked into the uberjar.
  (if-let [r (io/resource "VERSION")]
    (str/trim (slurp r))
    "unknown"))

(def app-revision
  (not-empty (System/getenv "APP_REVISION")))

(def default-slow-ms 300)
(def max-slow-ms 60000)

(defn- text [status body]
  {:status status
   :headers {"Content-Type" "text/plain; charset=utf-8"}
   :body body})

(defn- query-param
  "Query-string parameter by name. Parsed by hand (not wrap-params) so a
  form-encoded POST body is never consumed before /echo reads it."
  [request name]
  (let [parsed (some-> (:query-string request) (codec/form-decode "UTF-8"))]
    (when (map? parsed)
      (let [v (get parsed name)]
        (if (coll? v) (first v) v)))))

(defn- slow [request]
  (let [raw (query-param request "ms")
        ms  (if raw (parse-long raw) default-slow-ms)]
    (if (and ms (<= 0 ms max-slow-ms))
      (do (Thread/sleep (long ms))
          (text 200 (str "slept ms=" ms " version=" app-version "\n")))
      (text 400 (str "ms must be an integer in 0.." max-slow-ms "\n")))))

(defn- echo
  "Return the request body byte-for-byte."
  [request]
  (let [out (java.io.ByteArrayOutputStream.)]
    (when-let [body (:body request)]
      (io/copy body out))
    {:status 200
     :headers {"Content-Type" (or (get-in request [:headers "content-type"])
                                  "application/octet-stream")}
     :body (.toByteArray out)}))

(defroutes routes
  (GET "/health" [] (text 200 (str "ok version=" app-version "\n")))
  (GET "/" [] (text 200 (str "hello from sample-app version=" app-version "\n")))
  (GET "/slow" request (slow request))
  (POST "/echo" request (echo request))
  (route/not-found (text 404 "not found\n")))

(defn wrap-version-headers
  "Stamp every response (including 404s) with the running version."
  [handler]
  (fn [request]
    (when-let [response (handler request)]
      (cond-> (assoc-in response [:headers "X-App-Version"] app-version)
        app-revision (assoc-in [:headers "X-App-Revision"] app-revision)))))

(def app (wrap-version-headers routes))

(defn- env-port [name default]
  (if-let [v (not-empty (System/getenv name))]
    (Integer/parseInt v)
    default))

(defn -main [& _args]
  ;; NREPL_PORT is deliberately ignored: nREPL is not bundled (keeps the
  ;; jar small and the offline Debian build simple).
  (let [host (or (not-empty (System/getenv "HOST")) "127.0.0.1")
        port (env-port "PORT" 3000)]
    (run-jetty app {:host host :port port :join? false})
    (println (str "sample-app " app-version " listening on " host ":" port))))
